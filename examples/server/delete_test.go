package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3/option"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/tenancy"
)

// The server's wiring of a hard delete, on both stores: the tenant's traces go, its data
// key is a tombstone, its key is refused, and the ledger (which recorded the deletion)
// still verifies.
func TestServerHardDelete(t *testing.T) {
	masterKey, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			env := map[string]string{}
			if name == "postgres" {
				env = map[string]string{"DATABASE_URL": pgtest.New(t), "LOOM_MASTER_KEY": masterKey}
			}
			cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			s, _, _ := startServer(t, cfg, &strings.Builder{})
			admin := s.Gateway.Admin()
			other, _ := admin.CreateTenant(ctx, "other")
			otherKey, _, err := admin.CreateKey(ctx, other.ID, "k")
			if err != nil {
				t.Fatal(err)
			}
			chat(t, s.Addr, s.BootstrapKey, "to be deleted")
			chat(t, s.Addr, otherKey, "to be kept")
			if err := s.Gateway.ForceFlush(ctx); err != nil {
				t.Fatal(err)
			}
			tenants, err := admin.ListTenants(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var gone string
			for _, tn := range tenants {
				if tn.ID != other.ID {
					gone = tn.ID
				}
			}
			if err := admin.DeleteTenant(ctx, gone); err != nil {
				t.Fatal(err)
			}
			count := func(q, tenant string) int {
				t.Helper()
				var n int
				if err := s.db.QueryRowContext(ctx, q, tenant).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := count(`SELECT count(*) FROM traces WHERE tenant_id = $1`, gone); n != 0 {
				t.Errorf("%d traces left for the deleted tenant", n)
			}
			if n := count(`SELECT count(*) FROM traces WHERE tenant_id = $1`, other.ID); n != 1 {
				t.Errorf("%d traces of the other tenant, want 1", n)
			}
			if n := count(`SELECT count(*) FROM tenant_data_keys WHERE tenant_id = $1 AND wrapped IS NULL AND destroyed_at IS NOT NULL`, gone); n != 1 {
				t.Errorf("%d data key tombstones, want 1", n)
			}
			c := chatClient(s.Addr, s.BootstrapKey)
			var hr *http.Response
			_, err = c.Models.List(ctx, option.WithResponseInto(&hr))
			if hr == nil || hr.StatusCode != http.StatusUnauthorized {
				t.Errorf("the deleted tenant's key: %v", err)
			}
			rep, err := ledger.Verify(ctx, ledger.VerifyOptions{DB: s.db, Dialect: s.dialect})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range rep.Failures {
				t.Errorf("ledger: %+v", f)
			}
			if err := admin.DeleteTenant(ctx, gone); !errors.Is(err, tenancy.ErrNotFound) {
				t.Errorf("second delete: %v, want ErrNotFound", err)
			}
		})
	}
}
