package admin

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters. They are written into every hash (PHC string
// format), so raising them later only needs new hashes: a user whose stored hash has lower
// parameters is rehashed on their next successful sign-in.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
}

// DefaultParams are OWASP's first recommendation for argon2id (19 MiB, 2 passes, 1 lane):
// about 20-40 ms per hash on a server core, which bounds guessing without letting a burst
// of sign-ins exhaust memory.
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	hashLen = 32
	// MinPasswordLen and MaxPasswordLen bound a password in bytes. The upper bound keeps
	// the work a sign-in costs bounded; the lower one is what a generated password beats
	// by far.
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

var b64 = base64.RawStdEncoding

// errBadHash is a stored hash that cannot be parsed: a corrupt row, never a user's fault.
var errBadHash = errors.New("admin: stored password hash is not an argon2id PHC string")

// HashPassword returns the argon2id hash of password with a fresh random salt, as a PHC
// string: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (unpadded standard base64).
func HashPassword(password string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("admin: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, hashLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// phc is a parsed hash.
type phc struct {
	params Params
	salt   []byte
	key    []byte
}

func parsePHC(s string) (phc, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return phc{}, errBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return phc{}, errBadHash
	}
	var h phc
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.params.Memory, &h.params.Time, &h.params.Threads); err != nil || n != 3 {
		return phc{}, errBadHash
	}
	if h.params.Memory < 8*uint32(h.params.Threads) || h.params.Time == 0 || h.params.Threads == 0 ||
		h.params.Memory > 4<<20 || h.params.Time > 100 {
		return phc{}, errBadHash // argon2 panics below its minimum; above these it is a denial of service
	}
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return phc{}, errBadHash
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return phc{}, errBadHash
	}
	return h, nil
}

// VerifyPassword reports whether password matches the PHC string hash, comparing in
// constant time, and whether hash was made with parameters below p (so it should be
// replaced by HashPassword(password, p) now that the password is known).
func VerifyPassword(password, hash string, p Params) (ok, rehash bool, err error) {
	h, err := parsePHC(hash)
	if err != nil {
		return false, false, err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
	ok = subtle.ConstantTimeCompare(key, h.key) == 1
	rehash = h.params.Memory < p.Memory || h.params.Time < p.Time || h.params.Threads < p.Threads || len(h.key) < hashLen
	return ok, ok && rehash, nil
}

// checkPassword refuses a password that is too short, too long, not UTF-8 or holds a
// control character (a NUL would be cut by some clients and not others).
func checkPassword(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return invalid("password", fmt.Sprintf("The password must be at least %d bytes long.", MinPasswordLen))
	case len(pw) > MaxPasswordLen:
		return invalid("password", fmt.Sprintf("The password must be at most %d bytes long.", MaxPasswordLen))
	case !validText(pw):
		return invalid("password", "The password must be valid UTF-8 without control characters.")
	}
	return nil
}

// GeneratePassword returns a random password of 24 base64url characters (144 bits).
func GeneratePassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin: generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
