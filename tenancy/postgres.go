package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore is a Store in PostgreSQL, through pgx.
type PostgresStore struct {
	pool        *pgxpool.Pool
	deleteSteps []PostgresDeleteStep // run inside DeleteTenantRows (delete.go)
}

var (
	_ Store       = (*PostgresStore)(nil)
	_ KeyToucher  = (*PostgresStore)(nil)
	_ Snapshotter = (*PostgresStore)(nil)
)

// NewPostgresStore returns a Store over pool, to whose database the caller has applied
// migrations.Up(ctx, stdlib.OpenDBFromPool(pool), migrations.Postgres). The caller keeps
// ownership of pool: Close does not close it.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore {
	return &PostgresStore{pool: pool}
}

// Close does nothing: the pool belongs to the caller.
func (s *PostgresStore) Close() error { return nil }

// CreateTenant inserts t; a zero CreatedAt is stamped with the current time.
func (s *PostgresStore) CreateTenant(ctx context.Context, t Tenant) error {
	if err := checkTenant(t); err != nil {
		return fmt.Errorf("tenancy: create tenant: %w", err)
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO tenants (id, name, status, created_at) VALUES ($1, $2, $3, $4)`,
		t.ID, t.Name, t.Status, stamp(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("tenancy: create tenant %s: %w", t.ID, pgErr(err))
	}
	return nil
}

// GetTenant returns the tenant, or ErrNotFound.
func (s *PostgresStore) GetTenant(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	err := s.pool.QueryRow(ctx, `SELECT id, name, status, created_at FROM tenants WHERE id = $1`, id).
		Scan(&t.ID, &t.Name, &t.Status, &t.CreatedAt)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenancy: get tenant %s: %w", id, pgErr(err))
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

// ListTenants returns every tenant, oldest first.
func (s *PostgresStore) ListTenants(ctx context.Context) ([]Tenant, error) {
	rows, _ := s.pool.Query(ctx, `SELECT id, name, status, created_at FROM tenants ORDER BY created_at, id`)
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := row.Scan(&t.ID, &t.Name, &t.Status, &t.CreatedAt)
		t.CreatedAt = t.CreatedAt.UTC()
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: list tenants: %w", pgErr(err))
	}
	return ts, nil
}

// SetTenantStatus sets the tenant's status (TenantActive or TenantInactive).
func (s *PostgresStore) SetTenantStatus(ctx context.Context, id, status string) error {
	if err := checkTenantStatus(status); err != nil {
		return fmt.Errorf("tenancy: set tenant status: %w", err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET status = $1 WHERE id = $2`, status, id)
	if err != nil {
		return fmt.Errorf("tenancy: set tenant status %s: %w", id, pgErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("tenancy: set tenant status %s: %w", id, ErrNotFound)
	}
	return nil
}

// RenameTenant sets the tenant's name.
func (s *PostgresStore) RenameTenant(ctx context.Context, id, name string) error {
	if err := checkName("tenant name", name); err != nil {
		return fmt.Errorf("tenancy: rename tenant: %w", err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET name = $1 WHERE id = $2`, name, id)
	if err != nil {
		return fmt.Errorf("tenancy: rename tenant %s: %w", id, pgErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("tenancy: rename tenant %s: %w", id, ErrNotFound)
	}
	return nil
}

// ListTenantSummaries returns every tenant, oldest first, with counts of its keys.
func (s *PostgresStore) ListTenantSummaries(ctx context.Context) ([]TenantSummary, error) {
	rows, _ := s.pool.Query(ctx,
		`SELECT t.id, t.name, t.status, t.created_at,
		        count(k.id), count(k.id) FILTER (WHERE k.status = 'active'), max(k.last_used_at)
		 FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id
		 GROUP BY t.id ORDER BY t.created_at, t.id`)
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TenantSummary, error) {
		var t TenantSummary
		err := row.Scan(&t.ID, &t.Name, &t.Status, &t.CreatedAt, &t.Keys, &t.ActiveKeys, &t.LastUsedAt)
		t.CreatedAt, t.LastUsedAt = t.CreatedAt.UTC(), utcPtr(t.LastUsedAt)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: list tenant summaries: %w", pgErr(err))
	}
	return ts, nil
}

// CreateKey inserts k; a zero CreatedAt is stamped with the current time.
func (s *PostgresStore) CreateKey(ctx context.Context, k APIKey) error {
	if err := checkKey(k); err != nil {
		return fmt.Errorf("tenancy: create key: %w", err)
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, status, created_at, revoked_at, last_used_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, k.TenantID, k.Name, k.Prefix, k.Hash[:], k.Status, stamp(k.CreatedAt),
		stampPtr(k.RevokedAt), stampPtr(k.LastUsedAt))
	if err != nil {
		return fmt.Errorf("tenancy: create key %s: %w", k.ID, pgErr(err))
	}
	return nil
}

const pgKeyColumns = `k.id, k.tenant_id, k.name, k.prefix, k.key_hash, k.status, k.created_at, k.revoked_at, k.last_used_at`

// scanPgKey scans pgKeyColumns, followed by whatever extra destinations the query adds.
func scanPgKey(row pgx.Row, extra ...any) (APIKey, error) {
	var (
		k    APIKey
		hash []byte
	)
	dest := append([]any{&k.ID, &k.TenantID, &k.Name, &k.Prefix, &hash, &k.Status, &k.CreatedAt, &k.RevokedAt, &k.LastUsedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return APIKey{}, err
	}
	copy(k.Hash[:], hash)
	k.CreatedAt = k.CreatedAt.UTC()
	k.RevokedAt = utcPtr(k.RevokedAt)
	k.LastUsedAt = utcPtr(k.LastUsedAt)
	return k, nil
}

// ListKeys returns the tenant's keys, oldest first; none for an unknown tenant.
func (s *PostgresStore) ListKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	rows, _ := s.pool.Query(ctx,
		`SELECT `+pgKeyColumns+` FROM api_keys k WHERE k.tenant_id = $1 ORDER BY k.created_at, k.id`, tenantID)
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (APIKey, error) { return scanPgKey(row) })
	if err != nil {
		return nil, fmt.Errorf("tenancy: list keys: %w", pgErr(err))
	}
	return ks, nil
}

// RevokeKey marks the tenant's key revoked at the given time; revoking a revoked key keeps
// its first revoked_at. ErrNotFound if the tenant has no such key.
func (s *PostgresStore) RevokeKey(ctx context.Context, tenantID, keyID string, at time.Time) error {
	// One statement: the update, or else whether the key exists at all.
	var updated, exists bool
	err := s.pool.QueryRow(ctx,
		`WITH u AS (
		   UPDATE api_keys SET status = 'revoked', revoked_at = $3
		   WHERE tenant_id = $1 AND id = $2 AND status = 'active'
		   RETURNING 1
		 )
		 SELECT EXISTS (SELECT 1 FROM u),
		        EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = $1 AND id = $2)`,
		tenantID, keyID, stamp(at)).Scan(&updated, &exists)
	if err != nil {
		return fmt.Errorf("tenancy: revoke key %s: %w", keyID, pgErr(err))
	}
	if !updated && !exists {
		return fmt.Errorf("tenancy: revoke key %s: %w", keyID, ErrNotFound)
	}
	return nil
}

// LookupKey finds a key by its hash, with its tenant.
func (s *PostgresStore) LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error) {
	var t Tenant
	row := s.pool.QueryRow(ctx,
		`SELECT `+pgKeyColumns+`, t.name, t.status, t.created_at
		 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1`, hash[:])
	k, err := scanPgKey(row, &t.Name, &t.Status, &t.CreatedAt)
	if err != nil {
		return APIKey{}, Tenant{}, fmt.Errorf("tenancy: lookup key: %w", pgErr(err))
	}
	t.ID = k.TenantID
	t.CreatedAt = t.CreatedAt.UTC()
	return k, t, nil
}

// ListActiveKeys returns every active key of an active tenant, with its tenant.
func (s *PostgresStore) ListActiveKeys(ctx context.Context) ([]ActiveKey, error) {
	rows, _ := s.pool.Query(ctx,
		`SELECT `+pgKeyColumns+`, t.name, t.status, t.created_at
		 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
		 WHERE k.status = 'active' AND t.status = 'active' ORDER BY k.created_at, k.id`)
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ActiveKey, error) {
		var t Tenant
		k, err := scanPgKey(row, &t.Name, &t.Status, &t.CreatedAt)
		t.ID, t.CreatedAt = k.TenantID, t.CreatedAt.UTC()
		return ActiveKey{Key: k, Tenant: t}, err
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: list active keys: %w", pgErr(err))
	}
	return ks, nil
}

// TouchKeys records that the keys were used at the given time; a later time already
// recorded is kept (see KeyToucher).
func (s *PostgresStore) TouchKeys(ctx context.Context, at time.Time, keyIDs ...string) error {
	if len(keyIDs) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx,
		`UPDATE api_keys SET last_used_at = greatest(last_used_at, $1) WHERE id = ANY($2)`, stamp(at), keyIDs)
	if err != nil {
		return fmt.Errorf("tenancy: touch keys: %w", pgErr(err))
	}
	return nil
}

// PutProviderConfig inserts or replaces the tenant's config of that name; a zero UpdatedAt
// is stamped with the current time.
func (s *PostgresStore) PutProviderConfig(ctx context.Context, c ProviderConfig) error {
	if err := checkProviderConfig(c); err != nil {
		return fmt.Errorf("tenancy: put provider config: %w", err)
	}
	models := c.Models
	if models == nil {
		models = []string{} // "[]", not JSON null
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO provider_configs (tenant_id, name, kind, base_url, sealed_api_key, key_version, key_last4, api_version, models, updated_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		 ON CONFLICT (tenant_id, name) DO UPDATE SET
		   kind = excluded.kind, base_url = excluded.base_url, sealed_api_key = excluded.sealed_api_key,
		   key_version = excluded.key_version, key_last4 = excluded.key_last4, api_version = excluded.api_version,
		   models = excluded.models, updated_at = excluded.updated_at`,
		c.TenantID, c.Name, c.Kind, c.BaseURL, emptyNil(c.SealedAPIKey), c.KeyVersion, c.KeyLast4, c.APIVersion,
		models, stamp(c.UpdatedAt))
	if err != nil {
		return fmt.Errorf("tenancy: put provider config %s/%s: %w", c.TenantID, c.Name, pgErr(err))
	}
	return nil
}

// DeleteProviderConfig removes the tenant's config of that name (ErrNotFound if none).
func (s *PostgresStore) DeleteProviderConfig(ctx context.Context, tenantID, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM provider_configs WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return fmt.Errorf("tenancy: delete provider config %s/%s: %w", tenantID, name, pgErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("tenancy: delete provider config %s/%s: %w", tenantID, name, ErrNotFound)
	}
	return nil
}

// ListProviderConfigs returns the tenant's provider configs by name; none for an unknown
// tenant.
func (s *PostgresStore) ListProviderConfigs(ctx context.Context, tenantID string) ([]ProviderConfig, error) {
	return s.listProviderConfigs(ctx, `WHERE tenant_id = $1 ORDER BY name`, tenantID)
}

// ListAllProviderConfigs returns every tenant's provider configs, by tenant and name.
func (s *PostgresStore) ListAllProviderConfigs(ctx context.Context) ([]ProviderConfig, error) {
	return s.listProviderConfigs(ctx, `ORDER BY tenant_id, name`)
}

func (s *PostgresStore) listProviderConfigs(ctx context.Context, where string, args ...any) ([]ProviderConfig, error) {
	rows, _ := s.pool.Query(ctx,
		`SELECT tenant_id, name, kind, base_url, sealed_api_key, key_version, key_last4, api_version, models, updated_at
		 FROM provider_configs `+where, args...)
	cs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ProviderConfig, error) {
		var c ProviderConfig
		err := row.Scan(&c.TenantID, &c.Name, &c.Kind, &c.BaseURL, &c.SealedAPIKey, &c.KeyVersion,
			&c.KeyLast4, &c.APIVersion, &c.Models, &c.UpdatedAt)
		c.SealedAPIKey = emptyNil(c.SealedAPIKey)
		c.Models = emptyNil(c.Models)
		c.UpdatedAt = c.UpdatedAt.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: list provider configs: %w", pgErr(err))
	}
	return cs, nil
}

func stampPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	s := stamp(*t)
	return &s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// pgErr turns the errors callers act on into ErrNotFound and ErrConflict, keeping the
// driver's error in the chain.
func pgErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case "23503": // foreign_key_violation
			return fmt.Errorf("tenant: %w: %w", ErrNotFound, err)
		}
	}
	return err
}
