package crypto

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// MasterKeySize is the length in bytes of a master key.
const MasterKeySize = 32

// ErrInvalidMasterKey is returned (wrapped) for a master key that is not base64 or not
// MasterKeySize bytes long. Error messages never include key material.
var ErrInvalidMasterKey = errors.New("crypto: invalid master key")

// ParseMasterKey decodes a base64 master key (standard or URL alphabet, padded or not;
// surrounding white space is ignored) and checks that it is exactly 32 bytes.
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidMasterKey)
	}
	var (
		key []byte
		err error
	)
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		if key, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrInvalidMasterKey)
	}
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("%w: decodes to %d bytes, want %d", ErrInvalidMasterKey, len(key), MasterKeySize)
	}
	return key, nil
}

// GenerateMasterKey returns a fresh random 32-byte master key in standard base64, the form
// ParseMasterKey and ParseKeyring accept.
func GenerateMasterKey() (string, error) {
	key := make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("crypto: generate master key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}
