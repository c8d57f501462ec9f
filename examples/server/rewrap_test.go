package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
)

// A master key rotation on both stores: seal under master 1 (derived keys, then data
// keys), run rewrap with "2,1", and everything opens with master 2 alone.
func TestRewrapCommand(t *testing.T) {
	ctx := context.Background()
	old, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			env := map[string]string{}
			var store rewrapStore
			dataDir := t.TempDir()
			if dialect == migrations.Postgres {
				url := pgtest.New(t)
				pool, err := pgxpool.New(ctx, url)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				if err := migrations.Up(ctx, stdlib.OpenDBFromPool(pool), migrations.Postgres); err != nil {
					t.Fatal(err)
				}
				store, env["DATABASE_URL"] = tenancy.NewPostgresStore(pool), url
			} else {
				db, err := sqlitedb.Open(ctx, filepath.Join(dataDir, "loom.db"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
					t.Fatal(err)
				}
				store = tenancy.NewSQLiteStore(db)
			}
			tn, err := tenancy.NewService(store, nil).CreateTenant(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			v1 := mustKeyring(t, "1:"+old)
			derived, dv, err := v1.Seal(tn.ID, "r", []byte("derived"))
			if err != nil {
				t.Fatal(err)
			}
			enveloped, ev, err := v1.WithDataKeys(store).Seal(tn.ID, "r", []byte("enveloped"))
			if err != nil {
				t.Fatal(err)
			}
			env["LOOM_MASTER_KEY"] = "2:" + testMasterKey + ",1:" + old
			var out strings.Builder
			code := cli([]string{"rewrap", "-data", dataDir}, stdio{getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &out})
			if code != exitOK {
				t.Fatalf("rewrap: exit %d\n%s", code, out.String())
			}
			if !strings.Contains(out.String(), "2 derived keys stored, 1 data keys rewrapped") {
				t.Errorf("rewrap said:\n%s", out.String())
			}
			v2 := mustKeyring(t, "2:"+testMasterKey).WithDataKeys(store)
			for _, c := range []struct {
				v      int
				sealed []byte
				want   string
			}{{dv, derived, "derived"}, {ev, enveloped, "enveloped"}} {
				got, err := v2.Open(tn.ID, "r", c.v, c.sealed)
				if err != nil || string(got) != c.want {
					t.Errorf("key version %d with master 2 alone: %q, %v", c.v, got, err)
				}
			}
			// Without rewrap, master 2 alone would not have opened the data key.
			if _, err := mustKeyring(t, "3:"+old).WithDataKeys(store).Open(tn.ID, "r", ev, enveloped); !errors.Is(err, loomcrypto.ErrUnknownVersion) {
				t.Errorf("open with a master version that wraps nothing: %v, want ErrUnknownVersion", err)
			}
		})
	}
}
