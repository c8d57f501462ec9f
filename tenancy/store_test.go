package tenancy

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
)

func TestSQLiteStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store { return newSQLiteStore(t) })
}

func TestPostgresStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store { return newPostgresStore(t) })
}

// newSQLiteStore is a migrated SQLite database in a temporary directory.
func newSQLiteStore(tb testing.TB) *SQLiteStore {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(tb.TempDir(), "loom.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		tb.Fatal(err)
	}
	s := NewSQLiteStore(db)
	tb.Cleanup(func() { s.Close() })
	return s
}

// newPostgresStore is a migrated PostgreSQL database of its own, dropped after the test.
func newPostgresStore(tb testing.TB) *PostgresStore {
	tb.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close() // does not close the pool
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		tb.Fatal(err)
	}
	s := NewPostgresStore(pool)
	tb.Cleanup(func() { s.Close() })
	return s
}

// at is a fixed instant with nanoseconds, which the stores keep to the microsecond.
func at(minute int) time.Time {
	return time.Date(2025, 3, 14, 15, minute, 26, 535897932, time.UTC)
}

func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

func ptr[T any](v T) *T { return &v }

func testKey(id, tenantID, raw string, created time.Time) APIKey {
	return APIKey{
		ID:        id,
		TenantID:  tenantID,
		Name:      "key " + id,
		Prefix:    raw[:DisplayPrefixLen],
		Hash:      HashKey(raw),
		Status:    KeyActive,
		CreatedAt: created,
	}
}

// testStore is the contract every Store must meet; each subtest gets a fresh store.
func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()
	mustTenants := func(t *testing.T, s Store, ts ...Tenant) {
		t.Helper()
		for _, tn := range ts {
			if err := s.CreateTenant(ctx, tn); err != nil {
				t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
			}
		}
	}
	acme := Tenant{ID: "acme", Name: "Acme", Status: TenantActive, CreatedAt: at(1)}
	globex := Tenant{ID: "globex", Name: "Globex", Status: TenantInactive, CreatedAt: at(2)}
	stored := func(t Tenant) Tenant { t.CreatedAt = micro(t.CreatedAt); return t }

	t.Run("tenants", func(t *testing.T) {
		s := newStore(t)
		// Created out of order: the list is by creation time.
		mustTenants(t, s, globex, acme)

		got, err := s.GetTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(stored(acme), got); diff != "" {
			t.Errorf("GetTenant (-want +got):\n%s", diff)
		}
		list, err := s.ListTenants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]Tenant{stored(acme), stored(globex)}, list); diff != "" {
			t.Errorf("ListTenants (-want +got):\n%s", diff)
		}
	})

	t.Run("tenant status", func(t *testing.T) {
		s := newStore(t)
		mustTenants(t, s, acme)
		for _, status := range []string{TenantInactive, TenantInactive, TenantActive} {
			if err := s.SetTenantStatus(ctx, "acme", status); err != nil {
				t.Fatalf("SetTenantStatus(%s): %v", status, err)
			}
			got, err := s.GetTenant(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != status {
				t.Errorf("after SetTenantStatus(%s): status %s", status, got.Status)
			}
		}
	})

	t.Run("keys", func(t *testing.T) {
		s := newStore(t)
		mustTenants(t, s, acme, globex)
		k1 := testKey("k1", "acme", "loom_first0000000", at(10))
		k2 := testKey("k2", "acme", "loom_second000000", at(11))
		k3 := testKey("k3", "globex", "loom_third0000000", at(12))
		k3.LastUsedAt = ptr(at(13))
		for _, k := range []APIKey{k2, k1, k3} {
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatalf("CreateKey(%s): %v", k.ID, err)
			}
		}
		storedKey := func(k APIKey) APIKey {
			k.CreatedAt = micro(k.CreatedAt)
			if k.LastUsedAt != nil {
				k.LastUsedAt = ptr(micro(*k.LastUsedAt))
			}
			return k
		}

		tests := []struct {
			name     string
			tenantID string
			want     []APIKey
		}{
			{name: "two keys oldest first", tenantID: "acme", want: []APIKey{storedKey(k1), storedKey(k2)}},
			{name: "only the tenant's own", tenantID: "globex", want: []APIKey{storedKey(k3)}},
			{name: "unknown tenant", tenantID: "nobody", want: []APIKey{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.ListKeys(ctx, tt.tenantID)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ListKeys(%s) (-want +got):\n%s", tt.tenantID, diff)
				}
			})
		}

		gotKey, gotTenant, err := s.LookupKey(ctx, HashKey("loom_third0000000"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(storedKey(k3), gotKey); diff != "" {
			t.Errorf("LookupKey key (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(stored(globex), gotTenant); diff != "" {
			t.Errorf("LookupKey tenant (-want +got):\n%s", diff)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		s := newStore(t)
		mustTenants(t, s, acme, globex)
		k := testKey("k1", "acme", "loom_first0000000", at(10))
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		// The second revocation is a no-op: revoked_at stays the first one.
		for _, when := range []time.Time{at(20), at(30)} {
			if err := s.RevokeKey(ctx, "acme", "k1", when); err != nil {
				t.Fatalf("RevokeKey at %v: %v", when, err)
			}
		}
		want := k
		want.CreatedAt = micro(k.CreatedAt)
		want.Status = KeyRevoked
		want.RevokedAt = ptr(micro(at(20)))
		list, err := s.ListKeys(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]APIKey{want}, list); diff != "" {
			t.Errorf("ListKeys after revoke (-want +got):\n%s", diff)
		}
		got, _, err := s.LookupKey(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("LookupKey after revoke (-want +got):\n%s", diff)
		}
	})

	t.Run("touch keys", func(t *testing.T) {
		s := newStore(t)
		tk, ok := s.(KeyToucher)
		if !ok {
			t.Fatalf("%T has no TouchKeys", s)
		}
		mustTenants(t, s, acme)
		for _, k := range []APIKey{
			testKey("k1", "acme", "loom_first0000000", at(10)),
			testKey("k2", "acme", "loom_second000000", at(11)),
		} {
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// An older time arriving late does not move last_used_at back.
		for _, when := range []time.Time{at(40), at(35)} {
			if err := tk.TouchKeys(ctx, when, "k1"); err != nil {
				t.Fatal(err)
			}
		}
		list, err := s.ListKeys(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*time.Time{}
		for _, k := range list {
			got[k.ID] = k.LastUsedAt
		}
		want := map[string]*time.Time{"k1": ptr(micro(at(40))), "k2": nil}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("last used (-want +got):\n%s", diff)
		}
	})

	t.Run("provider configs", func(t *testing.T) {
		s := newStore(t)
		mustTenants(t, s, acme, globex)
		openai := ProviderConfig{
			TenantID: "acme", Name: "openai", Kind: "openai", BaseURL: "https://api.openai.com/v1",
			SealedAPIKey: []byte{1, 2, 3}, KeyVersion: 1, Models: []string{"gpt-4o-mini", "gpt-4o"},
			UpdatedAt: at(50),
		}
		azure := ProviderConfig{
			TenantID: "acme", Name: "azure", Kind: "azure", BaseURL: "https://acme.openai.azure.com",
			SealedAPIKey: []byte{4, 5}, KeyVersion: 2, APIVersion: "2024-10-21", Models: []string{"prod-4o"},
			UpdatedAt: at(51),
		}
		// The upsert replaces every field; "any model" and "no key" read back as nil.
		openai2 := ProviderConfig{
			TenantID: "acme", Name: "openai", Kind: "openai", BaseURL: "https://proxy.example/v1",
			Models: []string{}, SealedAPIKey: []byte{}, UpdatedAt: at(52),
		}
		for _, c := range []ProviderConfig{openai, azure} {
			if err := s.PutProviderConfig(ctx, c); err != nil {
				t.Fatalf("PutProviderConfig(%s): %v", c.Name, err)
			}
		}
		storedCfg := func(c ProviderConfig) ProviderConfig {
			c.UpdatedAt = micro(c.UpdatedAt)
			if len(c.Models) == 0 {
				c.Models = nil
			}
			if len(c.SealedAPIKey) == 0 {
				c.SealedAPIKey = nil
			}
			return c
		}
		list := func(tenantID string) []ProviderConfig {
			t.Helper()
			got, err := s.ListProviderConfigs(ctx, tenantID)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		if diff := cmp.Diff([]ProviderConfig{storedCfg(azure), storedCfg(openai)}, list("acme")); diff != "" {
			t.Errorf("ListProviderConfigs (-want +got):\n%s", diff)
		}
		if err := s.PutProviderConfig(ctx, openai2); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]ProviderConfig{storedCfg(azure), storedCfg(openai2)}, list("acme")); diff != "" {
			t.Errorf("ListProviderConfigs after upsert (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]ProviderConfig{}, list("globex")); diff != "" {
			t.Errorf("another tenant's configs (-want +got):\n%s", diff)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		s := newStore(t)
		snap, ok := s.(Snapshotter)
		if !ok {
			t.Fatalf("%T is not a Snapshotter", s)
		}
		mustTenants(t, s, acme, globex)
		active := testKey("k1", "acme", "loom_first0000000", at(10))
		revoked := testKey("k2", "acme", "loom_second000000", at(11))
		revoked.Status, revoked.RevokedAt = KeyRevoked, ptr(at(12))
		ofInactive := testKey("k3", "globex", "loom_third0000000", at(13))
		for _, k := range []APIKey{active, revoked, ofInactive} {
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatalf("CreateKey(%s): %v", k.ID, err)
			}
		}
		keys, err := snap.ListActiveKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		active.CreatedAt = micro(active.CreatedAt)
		if diff := cmp.Diff([]ActiveKey{{Key: active, Tenant: stored(acme)}}, keys); diff != "" {
			t.Errorf("ListActiveKeys (-want +got):\n%s", diff)
		}

		cfgs := []ProviderConfig{
			{TenantID: "globex", Name: "azure", Kind: "azure", BaseURL: "https://globex.example", UpdatedAt: micro(at(20))},
			{TenantID: "acme", Name: "openai", Kind: "openai", Models: []string{"gpt-4o"}, UpdatedAt: micro(at(21))},
			{TenantID: "acme", Name: "anthropic", Kind: "anthropic", SealedAPIKey: []byte{7}, KeyVersion: 1, UpdatedAt: micro(at(22))},
		}
		for _, c := range cfgs {
			if err := s.PutProviderConfig(ctx, c); err != nil {
				t.Fatalf("PutProviderConfig(%s): %v", c.Name, err)
			}
		}
		got, err := snap.ListAllProviderConfigs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]ProviderConfig{cfgs[2], cfgs[1], cfgs[0]}, got); diff != "" {
			t.Errorf("ListAllProviderConfigs, by tenant and name (-want +got):\n%s", diff)
		}
	})

	t.Run("errors", func(t *testing.T) {
		s := newStore(t)
		mustTenants(t, s, acme)
		k := testKey("k1", "acme", "loom_first0000000", at(10))
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			op   func() error
			want error
		}{
			{"get missing tenant", func() error { _, err := s.GetTenant(ctx, "nobody"); return err }, ErrNotFound},
			{"duplicate tenant id", func() error { return s.CreateTenant(ctx, acme) }, ErrConflict},
			{"tenant with bad status", func() error {
				return s.CreateTenant(ctx, Tenant{ID: "x", Name: "X", Status: "deleted"})
			}, ErrInvalidInput},
			{"status of missing tenant", func() error { return s.SetTenantStatus(ctx, "nobody", TenantInactive) }, ErrNotFound},
			{"bad status", func() error { return s.SetTenantStatus(ctx, "acme", "paused") }, ErrInvalidInput},
			{"duplicate key hash", func() error {
				return s.CreateKey(ctx, testKey("k2", "acme", "loom_first0000000", at(11)))
			}, ErrConflict},
			{"duplicate key id", func() error {
				return s.CreateKey(ctx, testKey("k1", "acme", "loom_other0000000", at(11)))
			}, ErrConflict},
			{"key of missing tenant", func() error {
				return s.CreateKey(ctx, testKey("k3", "nobody", "loom_third0000000", at(11)))
			}, ErrNotFound},
			{"revoked key without revoked_at", func() error {
				k := testKey("k4", "acme", "loom_fourth000000", at(11))
				k.Status = KeyRevoked
				return s.CreateKey(ctx, k)
			}, ErrInvalidInput},
			{"lookup unknown hash", func() error { _, _, err := s.LookupKey(ctx, HashKey("loom_nope")); return err }, ErrNotFound},
			{"revoke missing key", func() error { return s.RevokeKey(ctx, "acme", "nokey", at(20)) }, ErrNotFound},
			{"revoke another tenant's key", func() error { return s.RevokeKey(ctx, "globex", "k1", at(20)) }, ErrNotFound},
			{"config of missing tenant", func() error {
				return s.PutProviderConfig(ctx, ProviderConfig{TenantID: "nobody", Name: "openai", Kind: "openai"})
			}, ErrNotFound},
			{"config without name", func() error {
				return s.PutProviderConfig(ctx, ProviderConfig{TenantID: "acme", Kind: "openai"})
			}, ErrInvalidInput},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.op(); !errors.Is(err, tt.want) {
					t.Errorf("got error %v, want %v", err, tt.want)
				}
			})
		}
		// The failed revocation of another tenant's key left it alone.
		got, _, err := s.LookupKey(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != KeyActive {
			t.Errorf("key status after refused revocations = %s, want %s", got.Status, KeyActive)
		}
	})
}
