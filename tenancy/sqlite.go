package tenancy

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// SQLiteStore is a Store in an SQLite database, the embedded default. Times are stored as
// INTEGER unix microseconds (UTC), the models list as JSON text.
type SQLiteStore struct {
	db          *sqlx.DB
	deleteSteps []SQLiteDeleteStep // run inside DeleteTenantRows (delete.go)
}

var (
	_ Store       = (*SQLiteStore)(nil)
	_ KeyToucher  = (*SQLiteStore)(nil)
	_ Snapshotter = (*SQLiteStore)(nil)
)

// NewSQLiteStore returns a Store over db, an SQLite database (see internal/sqlitedb.Open)
// with foreign keys on, to which the caller has applied migrations.Up(ctx, db,
// migrations.SQLite). The caller keeps ownership of db: Close does not close it.
func NewSQLiteStore(db *sql.DB) *SQLiteStore {
	// "sqlite3" only tells sqlx the bind style ("?"); the driver is whatever opened db.
	return &SQLiteStore{db: sqlx.NewDb(db, "sqlite3")}
}

// Close does nothing: the *sql.DB belongs to the caller.
func (s *SQLiteStore) Close() error { return nil }

type sqliteTenant struct {
	ID        string `db:"id"`
	Name      string `db:"name"`
	Status    string `db:"status"`
	CreatedAt int64  `db:"created_at"`
}

func (r sqliteTenant) tenant() Tenant {
	return Tenant{ID: r.ID, Name: r.Name, Status: r.Status, CreatedAt: fromMicros(r.CreatedAt)}
}

type sqliteKey struct {
	ID         string        `db:"id"`
	TenantID   string        `db:"tenant_id"`
	Name       string        `db:"name"`
	Prefix     string        `db:"prefix"`
	KeyHash    []byte        `db:"key_hash"`
	Status     string        `db:"status"`
	CreatedAt  int64         `db:"created_at"`
	RevokedAt  sql.NullInt64 `db:"revoked_at"`
	LastUsedAt sql.NullInt64 `db:"last_used_at"`
}

func (r sqliteKey) key() APIKey {
	k := APIKey{
		ID:         r.ID,
		TenantID:   r.TenantID,
		Name:       r.Name,
		Prefix:     r.Prefix,
		Status:     r.Status,
		CreatedAt:  fromMicros(r.CreatedAt),
		RevokedAt:  fromNullMicros(r.RevokedAt),
		LastUsedAt: fromNullMicros(r.LastUsedAt),
	}
	copy(k.Hash[:], r.KeyHash)
	return k
}

const sqliteKeyColumns = `k.id, k.tenant_id, k.name, k.prefix, k.key_hash, k.status, k.created_at, k.revoked_at, k.last_used_at`

type sqliteProviderConfig struct {
	TenantID     string `db:"tenant_id"`
	Name         string `db:"name"`
	Kind         string `db:"kind"`
	BaseURL      string `db:"base_url"`
	SealedAPIKey []byte `db:"sealed_api_key"`
	KeyVersion   int    `db:"key_version"`
	KeyLast4     string `db:"key_last4"`
	APIVersion   string `db:"api_version"`
	Models       string `db:"models"`
	UpdatedAt    int64  `db:"updated_at"`
}

// CreateTenant inserts t; a zero CreatedAt is stamped with the current time.
func (s *SQLiteStore) CreateTenant(ctx context.Context, t Tenant) error {
	if err := checkTenant(t); err != nil {
		return fmt.Errorf("tenancy: create tenant: %w", err)
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO tenants (id, name, status, created_at) VALUES (?, ?, ?, ?)`,
		t.ID, t.Name, t.Status, stamp(t.CreatedAt).UnixMicro())
	if err != nil {
		return fmt.Errorf("tenancy: create tenant %s: %w", t.ID, sqliteErr(err))
	}
	return nil
}

// GetTenant returns the tenant, or ErrNotFound.
func (s *SQLiteStore) GetTenant(ctx context.Context, id string) (Tenant, error) {
	var r sqliteTenant
	err := s.db.GetContext(ctx, &r, `SELECT id, name, status, created_at FROM tenants WHERE id = ?`, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenancy: get tenant %s: %w", id, sqliteErr(err))
	}
	return r.tenant(), nil
}

// ListTenants returns every tenant, oldest first.
func (s *SQLiteStore) ListTenants(ctx context.Context) ([]Tenant, error) {
	var rows []sqliteTenant
	err := s.db.SelectContext(ctx, &rows, `SELECT id, name, status, created_at FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list tenants: %w", sqliteErr(err))
	}
	ts := make([]Tenant, len(rows))
	for i, r := range rows {
		ts[i] = r.tenant()
	}
	return ts, nil
}

// SetTenantStatus sets the tenant's status (TenantActive or TenantInactive).
func (s *SQLiteStore) SetTenantStatus(ctx context.Context, id, status string) error {
	if err := checkTenantStatus(status); err != nil {
		return fmt.Errorf("tenancy: set tenant status: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tenants SET status = ? WHERE id = ?`, status, id)
	if err != nil {
		return fmt.Errorf("tenancy: set tenant status %s: %w", id, sqliteErr(err))
	}
	return requireRow(res, "tenancy: set tenant status "+id)
}

// RenameTenant sets the tenant's name.
func (s *SQLiteStore) RenameTenant(ctx context.Context, id, name string) error {
	if err := checkName("tenant name", name); err != nil {
		return fmt.Errorf("tenancy: rename tenant: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tenants SET name = ? WHERE id = ?`, name, id)
	if err != nil {
		return fmt.Errorf("tenancy: rename tenant %s: %w", id, sqliteErr(err))
	}
	return requireRow(res, "tenancy: rename tenant "+id)
}

// ListTenantSummaries returns every tenant, oldest first, with counts of its keys.
func (s *SQLiteStore) ListTenantSummaries(ctx context.Context) ([]TenantSummary, error) {
	var rows []struct {
		sqliteTenant
		Keys       int           `db:"keys"`
		ActiveKeys int           `db:"active_keys"`
		LastUsedAt sql.NullInt64 `db:"last_used_at"`
	}
	err := s.db.SelectContext(ctx, &rows,
		`SELECT t.id, t.name, t.status, t.created_at,
		        count(k.id) AS keys, count(CASE WHEN k.status = 'active' THEN 1 END) AS active_keys,
		        max(k.last_used_at) AS last_used_at
		 FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id
		 GROUP BY t.id ORDER BY t.created_at, t.id`)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list tenant summaries: %w", sqliteErr(err))
	}
	ts := make([]TenantSummary, len(rows))
	for i, r := range rows {
		ts[i] = TenantSummary{Tenant: r.tenant(), Keys: r.Keys, ActiveKeys: r.ActiveKeys, LastUsedAt: fromNullMicros(r.LastUsedAt)}
	}
	return ts, nil
}

// CreateKey inserts k; a zero CreatedAt is stamped with the current time.
func (s *SQLiteStore) CreateKey(ctx context.Context, k APIKey) error {
	if err := checkKey(k); err != nil {
		return fmt.Errorf("tenancy: create key: %w", err)
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, status, created_at, revoked_at, last_used_at)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, k.Name, k.Prefix, k.Hash[:], k.Status, stamp(k.CreatedAt).UnixMicro(),
		nullMicros(k.RevokedAt), nullMicros(k.LastUsedAt))
	if err != nil {
		return fmt.Errorf("tenancy: create key %s: %w", k.ID, sqliteErr(err))
	}
	return nil
}

// ListKeys returns the tenant's keys, oldest first; none for an unknown tenant.
func (s *SQLiteStore) ListKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	var rows []sqliteKey
	err := s.db.SelectContext(ctx, &rows,
		`SELECT `+sqliteKeyColumns+` FROM api_keys k WHERE k.tenant_id = ? ORDER BY k.created_at, k.id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list keys: %w", sqliteErr(err))
	}
	ks := make([]APIKey, len(rows))
	for i, r := range rows {
		ks[i] = r.key()
	}
	return ks, nil
}

// RevokeKey marks the tenant's key revoked at the given time; revoking a revoked key keeps
// its first revoked_at. ErrNotFound if the tenant has no such key.
func (s *SQLiteStore) RevokeKey(ctx context.Context, tenantID, keyID string, at time.Time) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE tenant_id = ? AND id = ? AND status = 'active'`,
		stamp(at).UnixMicro(), tenantID, keyID)
	if err != nil {
		return fmt.Errorf("tenancy: revoke key %s: %w", keyID, sqliteErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("tenancy: revoke key %s: %w", keyID, err)
	}
	if n == 1 {
		return nil
	}
	// Nothing changed: already revoked (a no-op), or not this tenant's key.
	var one int
	err = s.db.GetContext(ctx, &one, `SELECT 1 FROM api_keys WHERE tenant_id = ? AND id = ?`, tenantID, keyID)
	if err != nil {
		return fmt.Errorf("tenancy: revoke key %s: %w", keyID, sqliteErr(err))
	}
	return nil
}

// sqliteKeyTenant is a key row joined with its tenant's (sqliteKeyWithTenant columns).
type sqliteKeyTenant struct {
	sqliteKey
	TenantName      string `db:"tenant_name"`
	TenantStatus    string `db:"tenant_status"`
	TenantCreatedAt int64  `db:"tenant_created_at"`
}

const sqliteKeyWithTenant = `SELECT ` + sqliteKeyColumns + `, t.name AS tenant_name, t.status AS tenant_status, t.created_at AS tenant_created_at
	FROM api_keys k JOIN tenants t ON t.id = k.tenant_id `

func (r sqliteKeyTenant) tenant() Tenant {
	return Tenant{ID: r.TenantID, Name: r.TenantName, Status: r.TenantStatus, CreatedAt: fromMicros(r.TenantCreatedAt)}
}

// LookupKey finds a key by its hash, with its tenant.
func (s *SQLiteStore) LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error) {
	var r sqliteKeyTenant
	err := s.db.GetContext(ctx, &r, sqliteKeyWithTenant+`WHERE k.key_hash = ?`, hash[:])
	if err != nil {
		return APIKey{}, Tenant{}, fmt.Errorf("tenancy: lookup key: %w", sqliteErr(err))
	}
	return r.key(), r.tenant(), nil
}

// ListActiveKeys returns every active key of an active tenant, with its tenant.
func (s *SQLiteStore) ListActiveKeys(ctx context.Context) ([]ActiveKey, error) {
	var rows []sqliteKeyTenant
	err := s.db.SelectContext(ctx, &rows, sqliteKeyWithTenant+`WHERE k.status = 'active' AND t.status = 'active' ORDER BY k.created_at, k.id`)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list active keys: %w", sqliteErr(err))
	}
	ks := make([]ActiveKey, len(rows))
	for i, r := range rows {
		ks[i] = ActiveKey{Key: r.key(), Tenant: r.tenant()}
	}
	return ks, nil
}

// TouchKeys records that the keys were used at the given time; a later time already
// recorded is kept (see KeyToucher).
func (s *SQLiteStore) TouchKeys(ctx context.Context, at time.Time, keyIDs ...string) error {
	if len(keyIDs) == 0 {
		return nil
	}
	q, args, err := sqlx.In(`UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id IN (?)`,
		stamp(at).UnixMicro(), keyIDs)
	if err != nil {
		return fmt.Errorf("tenancy: touch keys: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("tenancy: touch keys: %w", sqliteErr(err))
	}
	return nil
}

// PutProviderConfig inserts or replaces the tenant's config of that name; a zero UpdatedAt
// is stamped with the current time.
func (s *SQLiteStore) PutProviderConfig(ctx context.Context, c ProviderConfig) error {
	if err := checkProviderConfig(c); err != nil {
		return fmt.Errorf("tenancy: put provider config: %w", err)
	}
	models := []byte("[]")
	if len(c.Models) > 0 {
		var err error
		if models, err = json.Marshal(c.Models); err != nil {
			return fmt.Errorf("tenancy: put provider config: %w", err)
		}
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO provider_configs (tenant_id, name, kind, base_url, sealed_api_key, key_version, key_last4, api_version, models, updated_at)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT (tenant_id, name) DO UPDATE SET
		   kind = excluded.kind, base_url = excluded.base_url, sealed_api_key = excluded.sealed_api_key,
		   key_version = excluded.key_version, key_last4 = excluded.key_last4, api_version = excluded.api_version,
		   models = excluded.models, updated_at = excluded.updated_at`,
		c.TenantID, c.Name, c.Kind, c.BaseURL, emptyNil(c.SealedAPIKey), c.KeyVersion, c.KeyLast4, c.APIVersion,
		string(models), stamp(c.UpdatedAt).UnixMicro())
	if err != nil {
		return fmt.Errorf("tenancy: put provider config %s/%s: %w", c.TenantID, c.Name, sqliteErr(err))
	}
	return nil
}

// DeleteProviderConfig removes the tenant's config of that name (ErrNotFound if none).
func (s *SQLiteStore) DeleteProviderConfig(ctx context.Context, tenantID, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM provider_configs WHERE tenant_id = ? AND name = ?`, tenantID, name)
	if err != nil {
		return fmt.Errorf("tenancy: delete provider config %s/%s: %w", tenantID, name, sqliteErr(err))
	}
	return requireRow(res, "tenancy: delete provider config "+tenantID+"/"+name)
}

// ListProviderConfigs returns the tenant's provider configs by name; none for an unknown
// tenant.
func (s *SQLiteStore) ListProviderConfigs(ctx context.Context, tenantID string) ([]ProviderConfig, error) {
	return s.listProviderConfigs(ctx, `WHERE tenant_id = ? ORDER BY name`, tenantID)
}

// ListAllProviderConfigs returns every tenant's provider configs, by tenant and name.
func (s *SQLiteStore) ListAllProviderConfigs(ctx context.Context) ([]ProviderConfig, error) {
	return s.listProviderConfigs(ctx, `ORDER BY tenant_id, name`)
}

func (s *SQLiteStore) listProviderConfigs(ctx context.Context, where string, args ...any) ([]ProviderConfig, error) {
	var rows []sqliteProviderConfig
	err := s.db.SelectContext(ctx, &rows,
		`SELECT tenant_id, name, kind, base_url, sealed_api_key, key_version, key_last4, api_version, models, updated_at
		 FROM provider_configs `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list provider configs: %w", sqliteErr(err))
	}
	cs := make([]ProviderConfig, len(rows))
	for i, r := range rows {
		var models []string
		if err := json.Unmarshal([]byte(r.Models), &models); err != nil {
			return nil, fmt.Errorf("tenancy: list provider configs: %s/%s models: %w", r.TenantID, r.Name, err)
		}
		cs[i] = ProviderConfig{
			TenantID:     r.TenantID,
			Name:         r.Name,
			Kind:         r.Kind,
			BaseURL:      r.BaseURL,
			SealedAPIKey: emptyNil(r.SealedAPIKey),
			KeyVersion:   r.KeyVersion,
			KeyLast4:     r.KeyLast4,
			APIVersion:   r.APIVersion,
			Models:       emptyNil(models),
			UpdatedAt:    fromMicros(r.UpdatedAt),
		}
	}
	return cs, nil
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMicros(n.Int64)
	return &t
}

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: stamp(*t).UnixMicro(), Valid: true}
}

func requireRow(res sql.Result, op string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// SQLite extended result codes (sqlite3.h) for the constraint failures a caller must tell
// apart; modernc.org/sqlite reports extended codes through its error's Code method.
const (
	sqliteConstraintForeignKey = 787
	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
)

// sqliteErr turns the errors callers act on into ErrNotFound and ErrConflict, keeping the
// driver's error in the chain.
func sqliteErr(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var coded interface{ Code() int }
	if errors.As(err, &coded) {
		switch coded.Code() {
		case sqliteConstraintUnique, sqliteConstraintPrimaryKey:
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case sqliteConstraintForeignKey:
			return fmt.Errorf("tenant: %w: %w", ErrNotFound, err)
		}
	}
	return err
}
