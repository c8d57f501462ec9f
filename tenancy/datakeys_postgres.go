package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

var _ loomcrypto.DataKeyRewrapper = (*PostgresStore)(nil)

const pgDataKeyColumns = `tenant_id, version, master_version, wrapped, created_at, destroyed_at`

func scanPgDataKey(row pgx.Row) (loomcrypto.WrappedDataKey, error) {
	var k loomcrypto.WrappedDataKey
	if err := row.Scan(&k.TenantID, &k.Version, &k.MasterVersion, &k.Wrapped, &k.CreatedAt, &k.DestroyedAt); err != nil {
		return loomcrypto.WrappedDataKey{}, err
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.DestroyedAt = utcPtr(k.DestroyedAt)
	return k, nil
}

// DataKey returns the tenant's data key row of that version (live or a tombstone), or an
// error wrapping crypto.ErrDataKeyNotFound.
func (s *PostgresStore) DataKey(ctx context.Context, tenantID string, version int) (loomcrypto.WrappedDataKey, error) {
	k, err := scanPgDataKey(s.pool.QueryRow(ctx,
		`SELECT `+pgDataKeyColumns+` FROM tenant_data_keys WHERE tenant_id = $1 AND version = $2`, tenantID, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return k, fmt.Errorf("tenancy: data key %d of tenant %s: %w", version, tenantID, loomcrypto.ErrDataKeyNotFound)
	}
	if err != nil {
		return k, fmt.Errorf("tenancy: data key %d of tenant %s: %w", version, tenantID, err)
	}
	return k, nil
}

// CreateDataKey inserts k unless the tenant has a row of that version already (a live key
// or a tombstone), and returns the row stored.
func (s *PostgresStore) CreateDataKey(ctx context.Context, k loomcrypto.WrappedDataKey) (loomcrypto.WrappedDataKey, error) {
	if k.TenantID == "" || k.Wrapped == nil {
		return k, fmt.Errorf("tenancy: create data key: empty tenant id or key: %w", ErrInvalidInput)
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO tenant_data_keys (tenant_id, version, master_version, wrapped, created_at)
		 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, version) DO NOTHING`,
		k.TenantID, k.Version, k.MasterVersion, k.Wrapped, stamp(k.CreatedAt))
	if err != nil {
		return k, fmt.Errorf("tenancy: create data key of tenant %s: %w", k.TenantID, err)
	}
	// Read back: another process may have inserted first, or the tenant been deleted.
	return s.DataKey(ctx, k.TenantID, k.Version)
}

// ListDataKeys returns up to limit live data keys after (afterTenant, afterVersion), by
// tenant id and version.
func (s *PostgresStore) ListDataKeys(ctx context.Context, afterTenant string, afterVersion, limit int) ([]loomcrypto.WrappedDataKey, error) {
	rows, _ := s.pool.Query(ctx,
		`SELECT `+pgDataKeyColumns+` FROM tenant_data_keys
		 WHERE destroyed_at IS NULL AND (tenant_id, version) > ($1, $2)
		 ORDER BY tenant_id, version LIMIT $3`, afterTenant, afterVersion, limit)
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (loomcrypto.WrappedDataKey, error) {
		return scanPgDataKey(row)
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: list data keys: %w", err)
	}
	return ks, nil
}

// RewrapDataKey replaces the row's wrapped key and master version with k's if it is live
// and still wrapped by fromMasterVersion.
func (s *PostgresStore) RewrapDataKey(ctx context.Context, k loomcrypto.WrappedDataKey, fromMasterVersion int) (bool, error) {
	tag, err := s.pool.Exec(ctx,
		`UPDATE tenant_data_keys SET wrapped = $1, master_version = $2
		 WHERE tenant_id = $3 AND version = $4 AND master_version = $5 AND destroyed_at IS NULL`,
		k.Wrapped, k.MasterVersion, k.TenantID, k.Version, fromMasterVersion)
	if err != nil {
		return false, fmt.Errorf("tenancy: rewrap data key of tenant %s: %w", k.TenantID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// DestroyDataKeys turns the tenant's data keys into tombstones and commits (see
// TenantDeleter).
func (s *PostgresStore) DestroyDataKeys(ctx context.Context, tenantID string, at time.Time) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("tenancy: destroy data keys: %w", err)
	}
	defer tx.Rollback(ctx)
	var known bool
	if err := tx.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`,
		tenantID).Scan(&known); err != nil {
		return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
	}
	if !known {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, ErrNotFound)
	}
	// The upsert first: a key being created meanwhile conflicts with it and ends destroyed
	// whichever commits first.
	for _, q := range []string{
		`INSERT INTO tenant_data_keys (tenant_id, version, master_version, wrapped, created_at, destroyed_at)
		 VALUES ($1, $2, 0, NULL, $3, $3)
		 ON CONFLICT (tenant_id, version) DO UPDATE SET wrapped = NULL, master_version = 0,
		     destroyed_at = COALESCE(tenant_data_keys.destroyed_at, EXCLUDED.destroyed_at)`,
		`UPDATE tenant_data_keys SET wrapped = NULL, master_version = 0, destroyed_at = $3
		 WHERE tenant_id = $1 AND version <> $2 AND destroyed_at IS NULL`,
	} {
		if _, err := tx.Exec(ctx, q, tenantID, loomcrypto.FirstDataKeyVersion, stamp(at)); err != nil {
			return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("tenancy: destroy data keys of tenant %s: %w", tenantID, err)
	}
	return nil
}

// DeleteTenantRows removes the tenant's keys, provider configs, the delete steps' rows and
// the tenant in one transaction (see TenantDeleter).
func (s *PostgresStore) DeleteTenantRows(ctx context.Context, tenantID string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	defer tx.Rollback(ctx)
	for _, q := range []string{
		`DELETE FROM api_keys WHERE tenant_id = $1`,
		`DELETE FROM provider_configs WHERE tenant_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, tenantID); err != nil {
			return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
		}
	}
	for _, step := range s.deleteSteps {
		if err := step(ctx, tx, tenantID); err != nil {
			return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, tenantID); err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: %w", tenantID, err)
	}
	return nil
}
