package tenancy

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"strings"
)

const (
	// KeyPrefix starts every Loom API key, so keys are recognisable in logs and by secret
	// scanners, and so garbage is refused without a lookup.
	KeyPrefix = "loom_"
	// DisplayPrefixLen is how many leading characters of a raw key are kept as its display
	// prefix ("loom_" and 7 random characters).
	DisplayPrefixLen = 12

	// keyBodyLen is the base62 length of 32 random bytes: 62^43 > 2^256.
	keyBodyLen = 43
	// maxKeyLen bounds what Authenticate will hash; anything longer is not a Loom key.
	maxKeyLen = 256
)

// GenerateKey makes a new API key from 32 bytes of crypto/rand: raw is KeyPrefix followed by
// 43 base62 characters (alphanumeric, so a double click selects all of it), prefix is its
// first DisplayPrefixLen characters and hash its SHA-256. Only prefix and hash are stored.
func GenerateKey() (raw string, prefix string, hash [32]byte, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", [32]byte{}, fmt.Errorf("tenancy: generate key: %w", err)
	}
	body := new(big.Int).SetBytes(b[:]).Text(62)
	raw = KeyPrefix + strings.Repeat("0", keyBodyLen-len(body)) + body
	return raw, raw[:DisplayPrefixLen], HashKey(raw), nil
}

// HashKey is the SHA-256 of a raw key, the only form in which keys are stored and looked up.
// A fast hash is right here: the key carries 256 random bits, so there is nothing to
// brute-force, and the hash runs on every request.
func HashKey(raw string) [32]byte {
	if len(raw) <= maxKeyLen {
		// Hashing from a stack copy spares the request path the heap allocation that
		// []byte(raw) costs for anything longer than 32 bytes.
		var buf [maxKeyLen]byte
		return sha256.Sum256(buf[:copy(buf[:], raw)])
	}
	return sha256.Sum256([]byte(raw))
}

// plausibleKey reports whether raw could be a Loom key at all; anything else is refused
// before it costs a hash or a lookup.
func plausibleKey(raw string) bool {
	return len(raw) > len(KeyPrefix) && len(raw) <= maxKeyLen && strings.HasPrefix(raw, KeyPrefix)
}
