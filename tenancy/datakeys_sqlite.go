package tenancy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

var _ loomcrypto.DataKeyRewrapper = (*SQLiteStore)(nil)

type sqliteDataKey struct {
	TenantID      string        `db:"tenant_id"`
	Version       int           `db:"version"`
	MasterVersion int           `db:"master_version"`
	Wrapped       []byte        `db:"wrapped"`
	CreatedAt     int64         `db:"created_at"`
	DestroyedAt   sql.NullInt64 `db:"destroyed_at"`
}

func (r sqliteDataKey) key() loomcrypto.WrappedDataKey {
	return loomcrypto.WrappedDataKey{
		TenantID: r.TenantID, Version: r.Version, MasterVersion: r.MasterVersion, Wrapped: r.Wrapped,
		CreatedAt: fromMicros(r.CreatedAt), DestroyedAt: fromNullMicros(r.DestroyedAt),
	}
}

const sqliteDataKeyColumns = `tenant_id, version, master_version, wrapped, created_at, destroyed_at`

// DataKey returns the tenant's data key row of that version (live or a tombstone), or an
// error wrapping crypto.ErrDataKeyNotFound.
func (s *SQLiteStore) DataKey(ctx context.Context, tenantID string, version int) (loomcrypto.WrappedDataKey, error) {
	var r sqliteDataKey
	err := s.db.GetContext(ctx, &r,
		`SELECT `+sqliteDataKeyColumns+` FROM tenant_data_keys WHERE tenant_id = ? AND version = ?`, tenantID, version)
	if errors.Is(err, sql.ErrNoRows) {
		return loomcrypto.WrappedDataKey{}, fmt.Errorf("tenancy: data key %d of tenant %s: %w", version, tenantID, loomcrypto.ErrDataKeyNotFound)
	}
	if err != nil {
		return loomcrypto.WrappedDataKey{}, fmt.Errorf("tenancy: data key %d of tenant %s: %w", version, tenantID, err)
	}
	return r.key(), nil
}

// CreateDataKey inserts k unless the tenant has a row of that version already (a live key
// or a tombstone), and returns the row stored.
func (s *SQLiteStore) CreateDataKey(ctx context.Context, k loomcrypto.WrappedDataKey) (loomcrypto.WrappedDataKey, error) {
	if k.TenantID == "" || k.Wrapped == nil {
		return k, fmt.Errorf("tenancy: create data key: empty tenant id or key: %w", ErrInvalidInput)
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO tenant_data_keys (tenant_id, version, master_version, wrapped, created_at)
		 VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, version) DO NOTHING`,
		k.TenantID, k.Version, k.MasterVersion, k.Wrapped, stamp(k.CreatedAt).UnixMicro())
	if err != nil {
		return k, fmt.Errorf("tenancy: create data key of tenant %s: %w", k.TenantID, err)
	}
	return s.DataKey(ctx, k.TenantID, k.Version)
}

// ListDataKeys returns up to limit live data keys after (afterTenant, afterVersion), by
// tenant id and version.
func (s *SQLiteStore) ListDataKeys(ctx context.Context, afterTenant string, afterVersion, limit int) ([]loomcrypto.WrappedDataKey, error) {
	var rows []sqliteDataKey
	err := s.db.SelectContext(ctx, &rows,
		`SELECT `+sqliteDataKeyColumns+` FROM tenant_data_keys
		 WHERE destroyed_at IS NULL AND (tenant_id, version) > (?, ?)
		 ORDER BY tenant_id, version LIMIT ?`, afterTenant, afterVersion, limit)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list data keys: %w", err)
	}
	ks := make([]loomcrypto.WrappedDataKey, len(rows))
	for i, r := range rows {
		ks[i] = r.key()
	}
	return ks, nil
}

// RewrapDataKey replaces the row's wrapped key and master version with k's if it is live
// and still wrapped by fromMasterVersion.
func (s *SQLiteStore) RewrapDataKey(ctx context.Context, k loomcrypto.WrappedDataKey, fromMasterVersion int) (bool, error) {
	res, err := s.db.ExecContext(ctx,
		`UPDATE tenant_data_keys SET wrapped = ?, master_version = ?
		 WHERE tenant_id = ? AND version = ? AND master_version = ? AND destroyed_at IS NULL`,
		k.Wrapped, k.MasterVersion, k.TenantID, k.Version, fromMasterVersion)
	if err != nil {
		return false, fmt.Errorf("tenancy: rewrap data key of tenant %s: %w", k.TenantID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DestroyDataKeys turns the tenant's data keys into tombstones and commits (see
// TenantDeleter).
func (s *SQLiteStore) DestroyDataKeys(ctx context.Context, tenantID string, at time.Time) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tenancy: destroy data keys: %w", err)
	}
	defer tx.Rollback()
	// The connection zeroes the bytes it frees from here on, the wrapped keys among them.
	if _, err := tx.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
	}
	// Writes first: a transaction that read before writing could not take the write lock
	// after another connection's commit (WAL snapshot), busy timeout or not.
	us := stamp(at).UnixMicro()
	for _, q := range []string{
		`INSERT INTO tenant_data_keys (tenant_id, version, master_version, wrapped, created_at, destroyed_at)
		 VALUES (?1, ?2, 0, NULL, ?3, ?3)
		 ON CONFLICT (tenant_id, version) DO UPDATE SET wrapped = NULL, master_version = 0,
		     destroyed_at = COALESCE(tenant_data_keys.destroyed_at, excluded.destroyed_at)`,
		`UPDATE tenant_data_keys SET wrapped = NULL, master_version = 0, destroyed_at = ?3
		 WHERE tenant_id = ?1 AND version <> ?2 AND destroyed_at IS NULL`,
	} {
		if _, err := tx.ExecContext(ctx, q, tenantID, loomcrypto.FirstDataKeyVersion, us); err != nil {
			return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
		}
	}
	var known bool
	if err := tx.GetContext(ctx, &known, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?)`, tenantID); err != nil {
		return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
	}
	if !known {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, ErrNotFound) // rolled back
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
	}
	return nil
}

// DeleteTenantRows removes the tenant's keys, provider configs, the delete steps' rows and
// the tenant in one transaction (see TenantDeleter).
func (s *SQLiteStore) DeleteTenantRows(ctx context.Context, tenantID string) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM api_keys WHERE tenant_id = ?`,
		`DELETE FROM provider_configs WHERE tenant_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, tenantID); err != nil {
			return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
		}
	}
	for _, step := range s.deleteSteps {
		if err := step(ctx, tx.Tx, tenantID); err != nil {
			return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM tenants WHERE id = ?`, tenantID); err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	return nil
}
