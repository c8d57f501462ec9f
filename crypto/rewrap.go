package crypto

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DataKeyRewrapper is a DataKeyStore whose keys can be listed and rewrapped, for a master
// key rotation (both tenancy stores are).
type DataKeyRewrapper interface {
	DataKeyStore
	// ListDataKeys returns up to limit live (not destroyed) data keys ordered by tenant id
	// and version, strictly after (afterTenant, afterVersion); ("", 0) starts at the first.
	ListDataKeys(ctx context.Context, afterTenant string, afterVersion, limit int) ([]WrappedDataKey, error)
	// RewrapDataKey replaces the wrapped bytes and master version of k's row with k's, if
	// the row is still live and wrapped by fromMasterVersion; it reports whether it did.
	RewrapDataKey(ctx context.Context, k WrappedDataKey, fromMasterVersion int) (bool, error)
}

// RewrapStats counts what RewrapDataKeys did.
type RewrapStats struct {
	// Rewrapped data keys were wrapped by an older master version and now by the current one.
	Rewrapped int
	// Current data keys were wrapped by the current master version already.
	Current int
	// Changed data keys were rewrapped or destroyed by someone else meanwhile.
	Changed int
}

// rewrapPage is how many data keys RewrapDataKeys reads at a time.
const rewrapPage = 500

// RewrapDataKeys wraps every live data key in store with the current master key version:
// each key wrapped by another version the keyring holds is unwrapped and wrapped again.
// The rows sealed with the data keys are not touched, and they keep opening; once it has
// succeeded, the old master versions are needed by no data key (rows sealed with keys
// derived from an old master version, the scheme before envelope encryption, still need
// that version). It is safe to run while the gateway serves traffic and to run again; a
// data key wrapped by a version the keyring does not hold stops it with an error wrapping
// ErrUnknownVersion (the counts so far are returned with it).
func (k *Keyring) RewrapDataKeys(ctx context.Context, store DataKeyRewrapper) (RewrapStats, error) {
	var st RewrapStats
	afterTenant, afterVersion := "", 0
	for {
		page, err := store.ListDataKeys(ctx, afterTenant, afterVersion, rewrapPage)
		if err != nil {
			return st, fmt.Errorf("crypto: rewrap: %w", err)
		}
		for _, row := range page {
			afterTenant, afterVersion = row.TenantID, row.Version
			if row.MasterVersion == k.current {
				st.Current++
				continue
			}
			key, err := k.unwrap(row)
			if err != nil {
				return st, fmt.Errorf("crypto: rewrap: %w", err)
			}
			wrapped, err := k.wrapKey(k.current, row.TenantID, row.Version, key)
			clear(key)
			if err != nil {
				return st, fmt.Errorf("crypto: rewrap: %w", err)
			}
			from := row.MasterVersion
			row.Wrapped, row.MasterVersion = wrapped, k.current
			ok, err := store.RewrapDataKey(ctx, row, from)
			if err != nil {
				return st, fmt.Errorf("crypto: rewrap tenant %q: %w", row.TenantID, err)
			}
			if ok {
				st.Rewrapped++
			} else {
				st.Changed++
			}
		}
		if len(page) < rewrapPage {
			return st, nil
		}
	}
}

// AdoptDerivedKeys stores, for each tenant, the keys the scheme before envelope
// encryption derives from each master version the keyring holds, wrapped with the current
// master version like data keys (as rows of the master version's number, below
// DataKeyVersionBase). Once a tenant's derived keys are adopted, its old rows open without
// the old master versions, so those can be removed after a rotation; and a hard delete
// destroys the adopted keys with the data keys, so once the old master versions are gone
// from every configuration and backup, the tenant's old rows are shredded too. Keys
// already stored (or destroyed) are left alone; it returns how many it stored. The
// keyring must hold the old master versions while this runs.
func (k *Keyring) AdoptDerivedKeys(ctx context.Context, store DataKeyStore, tenantIDs []string) (int, error) {
	n := 0
	for _, tenantID := range tenantIDs {
		for _, v := range k.Versions() {
			if _, err := store.DataKey(ctx, tenantID, v); err == nil {
				continue
			} else if !errors.Is(err, ErrDataKeyNotFound) {
				return n, fmt.Errorf("crypto: adopt derived keys: %w", err)
			}
			key, err := deriveTenantKey(k.masters[v], tenantID)
			if err != nil {
				return n, err
			}
			wrapped, err := k.wrapKey(k.current, tenantID, v, key)
			clear(key)
			if err != nil {
				return n, err
			}
			if _, err := store.CreateDataKey(ctx, WrappedDataKey{
				TenantID: tenantID, Version: v, MasterVersion: k.current, Wrapped: wrapped,
				CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
			}); err != nil {
				return n, fmt.Errorf("crypto: adopt derived keys of tenant %q: %w", tenantID, err)
			}
			n++
		}
	}
	return n, nil
}
