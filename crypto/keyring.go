package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/hkdf"
)

const (
	// tenantKeyInfo prefixes the tenant id in the HKDF info parameter. It is part of the
	// stored data's format: never change it (see the package documentation).
	tenantKeyInfo = "loom/tenant-data-key/v1/"

	// aadLabel separates Loom's sealed records from any other use of the same keys. Part of
	// the stored data's format.
	aadLabel = "loom/seal/v1"

	nonceSize = 12 // 96-bit GCM nonce
	tagSize   = 16 // GCM tag
)

var (
	// ErrUnknownVersion is returned (wrapped) by Open for a key version the keyring does not
	// hold: the row was sealed with a master key that has since been removed, or the
	// keyring is misconfigured.
	ErrUnknownVersion = errors.New("crypto: unknown key version")

	// ErrDecrypt is returned (wrapped) by Open when the sealed bytes do not authenticate:
	// they were altered or truncated, or they belong to another tenant or record.
	ErrDecrypt = errors.New("crypto: decryption failed")
)

// Keyring seals and opens records with per-tenant keys: keys derived from versioned master
// keys, or, once WithDataKeys gives it a DataKeyStore, random per-tenant data keys wrapped
// by the master keys (envelope encryption). New records are sealed with the current
// version; records of any version the keyring holds can be opened. A Keyring is immutable
// apart from its key cache and is safe for concurrent use; a rotation builds a new Keyring.
type Keyring struct {
	current   int
	masters   map[int][]byte
	wrap      map[int]cipher.AEAD // per master version: the cipher wrapping data keys
	cacheSize int
	cache     *aeadCache

	dataKeys DataKeyStore // nil: derived keys only
	timeout  time.Duration
	epoch    atomic.Uint64 // bumped by Forget
}

// Option configures a Keyring.
type Option func(*keyringOptions)

type keyringOptions struct {
	cacheSize int
}

// DefaultCacheSize is the number of derived tenant keys a Keyring keeps by default. One
// entry is about a kilobyte (the expanded AES key and GHASH tables plus the tenant id).
const DefaultCacheSize = 10_000

// WithCacheSize bounds the number of derived (key version, tenant) ciphers kept in memory;
// the least recently used are evicted and derived again when needed (a few microseconds).
// A size of zero or less means DefaultCacheSize.
func WithCacheSize(n int) Option {
	return func(o *keyringOptions) { o.cacheSize = n }
}

// NewKeyring returns a keyring holding the given master keys by version, sealing with
// version current. Versions must be at least 1, every key exactly 32 bytes, and current
// one of the versions. The keys are copied.
func NewKeyring(current int, masters map[int][]byte, opts ...Option) (*Keyring, error) {
	if len(masters) == 0 {
		return nil, errors.New("crypto: keyring: no master keys")
	}
	k := &Keyring{current: current, masters: make(map[int][]byte, len(masters))}
	for v, key := range masters {
		if v < 1 || v >= DataKeyVersionBase {
			return nil, fmt.Errorf("crypto: keyring: key version %d: versions are 1 to %d", v, DataKeyVersionBase-1)
		}
		if len(key) != MasterKeySize {
			return nil, fmt.Errorf("%w: version %d is %d bytes, want %d", ErrInvalidMasterKey, v, len(key), MasterKeySize)
		}
		k.masters[v] = slices.Clone(key)
	}
	if _, ok := k.masters[current]; !ok {
		return nil, fmt.Errorf("crypto: keyring: current version %d has no master key", current)
	}
	o := keyringOptions{cacheSize: DefaultCacheSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.cacheSize <= 0 {
		o.cacheSize = DefaultCacheSize
	}
	k.cacheSize = o.cacheSize
	k.cache = newAEADCache(o.cacheSize)
	k.wrap = make(map[int]cipher.AEAD, len(k.masters))
	for v, master := range k.masters {
		wk, err := hkdfKey(master, wrapKeyInfo)
		if err != nil {
			return nil, err
		}
		if k.wrap[v], err = newGCM(wk); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// ParseKeyring builds a keyring from an operator's key setting (the value of
// LOOM_MASTER_KEY). The setting is either
//
//   - a single base64 master key, which becomes version 1; or
//   - a comma-separated list of VERSION:BASE64 entries, current version first, for example
//     "2:NEWKEY...,1:OLDKEY...".
//
// Each key is 32 bytes in base64 (as ParseMasterKey accepts); versions are decimal integers
// of at least 1 and must not repeat. White space around entries is ignored. To rotate, put a
// new version in front and keep the old entries, so rows sealed under them still open.
// Error messages name the entry's position and version, never the key.
func ParseKeyring(spec string, opts ...Option) (*Keyring, error) {
	entries := strings.Split(spec, ",")
	masters := make(map[int][]byte, len(entries))
	current := 0
	for i, entry := range entries {
		entry = strings.TrimSpace(entry)
		verText, keyText, hasVersion := strings.Cut(entry, ":")
		version := 1
		if hasVersion {
			v, err := strconv.Atoi(strings.TrimSpace(verText))
			if err != nil || v < 1 {
				return nil, fmt.Errorf("crypto: key spec entry %d: version must be an integer ≥ 1", i+1)
			}
			version = v
		} else {
			if len(entries) > 1 {
				return nil, fmt.Errorf("crypto: key spec entry %d: with several keys every entry must be VERSION:BASE64", i+1)
			}
			keyText = entry
		}
		key, err := ParseMasterKey(keyText)
		if err != nil {
			return nil, fmt.Errorf("crypto: key spec entry %d (version %d): %w", i+1, version, err)
		}
		if _, dup := masters[version]; dup {
			return nil, fmt.Errorf("crypto: key spec entry %d: version %d appears twice", i+1, version)
		}
		masters[version] = key
		if i == 0 {
			current = version
		}
	}
	return NewKeyring(current, masters, opts...)
}

// CurrentVersion returns the key version Seal uses.
func (k *Keyring) CurrentVersion() int { return k.current }

// Versions returns the key versions the keyring can open, in ascending order.
func (k *Keyring) Versions() []int {
	vs := make([]int, 0, len(k.masters))
	for v := range k.masters {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// String describes the keyring without key material, so a keyring that ends up in a log
// line or an error leaks nothing.
func (k *Keyring) String() string {
	return fmt.Sprintf("crypto.Keyring{current: %d, versions: %v}", k.current, k.Versions())
}

// GoString is String, so that %#v does not print the master keys either.
func (k *Keyring) GoString() string { return k.String() }

// Seal encrypts plaintext for a tenant and record with the current key version and returns
// the sealed bytes (nonce || ciphertext || tag) and the version to store beside them: the
// current master version, or FirstDataKeyVersion for an enveloped keyring (WithDataKeys),
// which creates the tenant's data key on its first seal. recordID is the trace id for
// trace bodies, or "provider:NAME" for a provider API key; the same tenantID and recordID
// are needed to open the result. Seal satisfies tracing.Sealer.
func (k *Keyring) Seal(tenantID, recordID string, plaintext []byte) (sealed []byte, version int, err error) {
	version = k.current
	if k.dataKeys != nil {
		version = FirstDataKeyVersion
	}
	aead, err := k.aead(version, tenantID, true)
	if err != nil {
		return nil, 0, err
	}
	// One allocation holds the output and, past its end, the additional data; the
	// returned slice's capacity stops before the additional data.
	n := nonceSize + len(plaintext) + tagSize
	buf := make([]byte, n+additionalDataLen(tenantID, recordID))
	aad := appendAdditionalData(buf[n:n], tenantID, recordID)
	nonce := buf[:nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, 0, fmt.Errorf("crypto: seal: nonce: %w", err)
	}
	out := aead.Seal(buf[:nonceSize:n], nonce, plaintext, aad)
	return out, version, nil
}

// Open decrypts bytes sealed by Seal for the same tenant and record under key version
// version. It returns an error wrapping ErrUnknownVersion if the keyring lacks that version
// (or, for a data key version, the master version wrapping the key), one wrapping
// ErrDataKeyDestroyed if the tenant's data key has been destroyed, and one wrapping
// ErrDecrypt if the bytes do not authenticate.
func (k *Keyring) Open(tenantID, recordID string, version int, sealed []byte) ([]byte, error) {
	// A master version the keyring lacks may still have its derived key in the store.
	if _, held := k.masters[version]; version < 1 || !held && version <= DataKeyVersionBase && k.dataKeys == nil {
		return nil, fmt.Errorf("%w: %d (have %v)", ErrUnknownVersion, version, k.Versions())
	}
	if len(sealed) < nonceSize+tagSize {
		return nil, fmt.Errorf("%w: sealed data is %d bytes, shorter than nonce and tag", ErrDecrypt, len(sealed))
	}
	aead, err := k.aead(version, tenantID, false)
	if err != nil {
		return nil, err
	}
	n := len(sealed) - nonceSize - tagSize
	buf := make([]byte, n+additionalDataLen(tenantID, recordID))
	aad := appendAdditionalData(buf[n:n], tenantID, recordID)
	plaintext, err := aead.Open(buf[:0:n], sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %q, record %q, key version %d", ErrDecrypt, tenantID, recordID, version)
	}
	return plaintext, nil
}

// aead returns the cached cipher for (version, tenant), deriving it (or reading the data
// key, creating it if create is set) on a miss. Two goroutines missing at once both derive
// or read it; the results are identical.
func (k *Keyring) aead(version int, tenantID string, create bool) (cipher.AEAD, error) {
	ck := cacheKey{version: version, tenant: tenantID}
	if a, ok := k.cache.get(ck); ok {
		return a, nil
	}
	master, ok := k.masters[version]
	if version > DataKeyVersionBase || !ok && k.dataKeys != nil {
		// A data key, or a key derived from a master version since removed, kept wrapped
		// in the store by AdoptDerivedKeys.
		return k.dataKeyAEAD(version, tenantID, create && version > DataKeyVersionBase)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	}
	key, err := deriveTenantKey(master, tenantID)
	if err != nil {
		return nil, err
	}
	a, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	k.cache.add(ck, a)
	return a, nil
}

// deriveTenantKey derives a tenant's 32-byte data key from a master key with HKDF-SHA256,
// no salt and info = "loom/tenant-data-key/v1/" + tenantID.
func deriveTenantKey(master []byte, tenantID string) ([]byte, error) {
	return hkdfKey(master, tenantKeyInfo+tenantID)
}

// hkdfKey derives a 32-byte key from a master key with HKDF-SHA256, no salt and info.
func hkdfKey(master []byte, info string) ([]byte, error) {
	r := hkdf.New(sha256.New, master, nil, []byte(info))
	key := make([]byte, 32)
	if _, err := io.ReadFull(r, key); err != nil {
		return nil, fmt.Errorf("crypto: derive key: %w", err)
	}
	return key, nil
}

// additionalDataLen is the length of the additional data for a tenant and record.
func additionalDataLen(tenantID, recordID string) int {
	return len(aadLabel) + 4 + len(tenantID) + 4 + len(recordID)
}

// appendAdditionalData appends the GCM additional data binding a sealed record to its
// tenant and record id. Length prefixes make the encoding unambiguous: ("ab", "c") and
// ("a", "bc") give different bytes.
func appendAdditionalData(dst []byte, tenantID, recordID string) []byte {
	dst = append(dst, aadLabel...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(tenantID)))
	dst = append(dst, tenantID...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recordID)))
	dst = append(dst, recordID...)
	return dst
}
