package crypto

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

const (
	// DataKeyVersionBase separates the two key schemes in a row's key version: versions
	// below it are master key versions (the tenant key is derived with HKDF), versions
	// above it name one of the tenant's random data keys (envelope encryption). Master key
	// versions must stay below it. Part of the stored data's format.
	DataKeyVersionBase = 1_000_000

	// FirstDataKeyVersion is the key version of rows sealed with a tenant's first data key,
	// the one Seal creates for a tenant that has none.
	FirstDataKeyVersion = DataKeyVersionBase + 1

	// wrapKeyInfo is the HKDF info deriving a master key's wrapping key, so the master key
	// itself never keys two different constructions. Part of the stored data's format.
	wrapKeyInfo = "loom/key-wrap/v1"
	// wrapAADLabel starts the additional data of a wrapped data key. Part of the format.
	wrapAADLabel = "loom/data-key/v1"

	dataKeySize = 32
	// WrappedDataKeySize is the length of a wrapped data key: nonce, key, GCM tag.
	WrappedDataKeySize = nonceSize + dataKeySize + tagSize

	// DefaultDataKeyTimeout bounds one data-key lookup in the DataKeyStore on a cache miss.
	DefaultDataKeyTimeout = 5 * time.Second
)

var (
	// ErrDataKeyNotFound is returned (wrapped) by a DataKeyStore for a tenant with no data
	// key row of the version asked for, and by Open for a row whose data key is not there.
	ErrDataKeyNotFound = errors.New("crypto: data key not found")

	// ErrDataKeyDestroyed is returned (wrapped) by Seal and Open for a tenant whose data
	// keys have been destroyed (a hard-deleted tenant): its ciphertexts cannot be opened by
	// anyone, and nothing new is sealed for it.
	ErrDataKeyDestroyed = errors.New("crypto: data key destroyed")
)

// WrappedDataKey is one stored data key of a tenant: a random AES-256 key, encrypted
// (wrapped) with a master key. Destroying it leaves the row as a tombstone: the wrapped
// bytes are gone and DestroyedAt is set, so the key can never be created again.
type WrappedDataKey struct {
	TenantID string
	// Version is the key version of the rows sealed with this key: above
	// DataKeyVersionBase for a random data key, or the master version a key adopted by
	// AdoptDerivedKeys was derived from.
	Version int
	// MasterVersion is the master key version Wrapped is wrapped with; 0 once destroyed.
	MasterVersion int
	// Wrapped is nonce (12 bytes) || AES-256-GCM(wrapping key, data key) || tag; nil once
	// destroyed.
	Wrapped   []byte
	CreatedAt time.Time
	// DestroyedAt is when the key was destroyed; nil while it is live.
	DestroyedAt *time.Time
}

// Destroyed reports whether the key has been destroyed.
func (w WrappedDataKey) Destroyed() bool { return w.DestroyedAt != nil }

// DataKeyStore keeps the tenants' wrapped data keys, apart from the rows they seal (both
// tenancy stores implement it, in the tenant_data_keys table). A Keyring reads it only on a
// cache miss, never once per seal.
type DataKeyStore interface {
	// DataKey returns the tenant's data key row of that version, live or destroyed, or an
	// error wrapping ErrDataKeyNotFound.
	DataKey(ctx context.Context, tenantID string, version int) (WrappedDataKey, error)
	// CreateDataKey stores k unless the tenant already has a row of k.Version (live or
	// destroyed), and returns the row stored: k, or the one that was there. Two processes
	// creating a tenant's key at once both get the same key back.
	CreateDataKey(ctx context.Context, k WrappedDataKey) (WrappedDataKey, error)
}

// WithDataKeys returns a keyring with the same master keys that seals with random
// per-tenant data keys kept in store (envelope encryption) and opens rows of both schemes:
// key versions below DataKeyVersionBase with keys derived from the master keys, as
// before, and versions above it with the tenant's data key, unwrapped by whichever master
// version wraps it. A tenant's data key is created on its first seal. Unwrapped keys are
// cached like derived ones (WithCacheSize), so store is read on a cache miss only; a
// lookup is bounded by DefaultDataKeyTimeout. Call Forget when a tenant's keys are
// destroyed.
func (k *Keyring) WithDataKeys(store DataKeyStore) *Keyring {
	return &Keyring{
		current:   k.current,
		masters:   k.masters,
		wrap:      k.wrap,
		cacheSize: k.cacheSize,
		cache:     newAEADCache(k.cacheSize),
		dataKeys:  store,
		timeout:   DefaultDataKeyTimeout,
	}
}

// Enveloped reports whether the keyring seals with per-tenant data keys (WithDataKeys).
func (k *Keyring) Enveloped() bool { return k.dataKeys != nil }

// Forget drops every cached key of the tenant, so its next seal or open reads the
// DataKeyStore again. Call it when the tenant's data keys have been destroyed (a hard
// delete), on every process holding a Keyring: from then on it seals nothing for the
// tenant and opens none of its envelope rows. A lookup that was under way when Forget was
// called does not put its key back in the cache.
func (k *Keyring) Forget(tenantID string) {
	k.epoch.Add(1)
	k.cache.removeTenant(tenantID)
}

// dataKeyAEAD reads (or, when create is set and the tenant has none, creates) the tenant's
// data key of that version and returns its cipher, caching it.
func (k *Keyring) dataKeyAEAD(version int, tenantID string, create bool) (cipher.AEAD, error) {
	if k.dataKeys == nil {
		return nil, fmt.Errorf("%w: %d is a data key version and the keyring has no data key store", ErrUnknownVersion, version)
	}
	epoch := k.epoch.Load()
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	row, err := k.dataKeys.DataKey(ctx, tenantID, version)
	if create && errors.Is(err, ErrDataKeyNotFound) {
		row, err = k.createDataKey(ctx, tenantID, version)
	}
	if err != nil && version <= DataKeyVersionBase {
		return nil, fmt.Errorf("%w: %d is not in the keyring, and the key it derived for tenant %q: %w", ErrUnknownVersion, version, tenantID, err)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: data key %d of tenant %q: %w", version, tenantID, err)
	}
	if row.Destroyed() {
		return nil, fmt.Errorf("%w: tenant %q, key version %d", ErrDataKeyDestroyed, tenantID, version)
	}
	key, err := k.unwrap(row)
	if err != nil {
		return nil, err
	}
	a, err := newGCM(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	if k.epoch.Load() == epoch {
		k.cache.add(cacheKey{version: version, tenant: tenantID}, a)
	}
	return a, nil
}

// createDataKey makes a random data key, wraps it with the current master key and stores
// it unless another process got there first; either way it returns the stored row.
func (k *Keyring) createDataKey(ctx context.Context, tenantID string, version int) (WrappedDataKey, error) {
	key := make([]byte, dataKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return WrappedDataKey{}, fmt.Errorf("crypto: data key: %w", err)
	}
	wrapped, err := k.wrapKey(k.current, tenantID, version, key)
	if err != nil {
		return WrappedDataKey{}, err
	}
	return k.dataKeys.CreateDataKey(ctx, WrappedDataKey{
		TenantID: tenantID, Version: version, MasterVersion: k.current, Wrapped: wrapped,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	})
}

// wrapKey wraps a data key with the wrapping key of master version mv.
func (k *Keyring) wrapKey(mv int, tenantID string, version int, key []byte) ([]byte, error) {
	w, ok := k.wrap[mv]
	if !ok {
		return nil, fmt.Errorf("%w: master version %d", ErrUnknownVersion, mv)
	}
	out := make([]byte, nonceSize, WrappedDataKeySize)
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("crypto: wrap data key: nonce: %w", err)
	}
	return w.Seal(out, out[:nonceSize], key, wrapAdditionalData(tenantID, version)), nil
}

// unwrap returns the plaintext data key of row; the caller clears it after use.
func (k *Keyring) unwrap(row WrappedDataKey) ([]byte, error) {
	w, ok := k.wrap[row.MasterVersion]
	if !ok {
		return nil, fmt.Errorf("%w: the data key %d of tenant %q is wrapped by master version %d (have %v)",
			ErrUnknownVersion, row.Version, row.TenantID, row.MasterVersion, k.Versions())
	}
	if len(row.Wrapped) != WrappedDataKeySize {
		return nil, fmt.Errorf("%w: wrapped data key of tenant %q is %d bytes, want %d", ErrDecrypt, row.TenantID, len(row.Wrapped), WrappedDataKeySize)
	}
	key, err := w.Open(nil, row.Wrapped[:nonceSize], row.Wrapped[nonceSize:], wrapAdditionalData(row.TenantID, row.Version))
	if err != nil {
		return nil, fmt.Errorf("%w: data key %d of tenant %q does not unwrap with master version %d",
			ErrDecrypt, row.Version, row.TenantID, row.MasterVersion)
	}
	return key, nil
}

// wrapAdditionalData binds a wrapped data key to its tenant and version, so a wrapped key
// copied to another tenant's row (or version) does not unwrap:
//
//	"loom/data-key/v1" || uint32be(len(tenantID)) || tenantID || uint32be(version)
func wrapAdditionalData(tenantID string, version int) []byte {
	b := make([]byte, 0, len(wrapAADLabel)+4+len(tenantID)+4)
	b = append(b, wrapAADLabel...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tenantID)))
	b = append(b, tenantID...)
	return binary.BigEndian.AppendUint32(b, uint32(version))
}

// newGCM returns AES-256-GCM under key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("crypto: aes: %w", err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("crypto: gcm: %w", err)
	}
	return a, nil
}
