package loom_test

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// outageGateway is a gateway on loopback over a store the test takes away.
type outageGateway struct {
	gw    *loom.Gateway
	srv   *httptest.Server
	clock *testClock
	ids   []string // X-Request-Id of every request answered 200
}

var outageStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	outageTTL      = 30 * time.Second
	outageStaleFor = 10 * time.Minute
)

func startOutageGateway(t *testing.T, store tenancy.Store, sink tracing.Sink, keySet bool) *outageGateway {
	t.Helper()
	o := &outageGateway{clock: &testClock{t: outageStart}}
	cfg := loom.Config{
		Store:        store,
		Routes:       []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Keyring:      testKeyring(t, 1, 1),
		Tracing:      tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, SpoolDir: t.TempDir()},
		AuthCacheTTL: outageTTL,
		AuthStaleFor: outageStaleFor,
		// Last-used times cannot be written during the outage either; they are not what
		// these tests are about.
		KeyUsageInterval: -1,
		Now:              o.clock.Now,
	}
	if keySet {
		cfg.KeySetRefresh = time.Hour // read once at New: the test's outage comes after
	}
	gw, err := loom.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.gw, o.srv = gw, httptest.NewServer(gw)
	t.Cleanup(func() {
		o.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return o
}

// status sends a chat request with key and returns the status, noting answered requests.
func (o *outageGateway) status(t *testing.T, key string) int {
	t.Helper()
	body := `{"model":"mock-1","messages":[{"role":"user","content":"hello"}]}`
	req, _ := http.NewRequest(http.MethodPost, o.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		o.ids = append(o.ids, resp.Header.Get("X-Request-Id"))
	}
	return resp.StatusCode
}

// outageKeys are made through admin (another replica): acme's key used before the
// outage and its key revoked during it, and the key of globex, a tenant with its own
// provider configuration, never used.
type outageKeys struct{ warm, revoked, unused, tenantID, revokedID string }

func newOutageKeys(t *testing.T, admin *tenancy.Service) outageKeys {
	t.Helper()
	ctx := context.Background()
	acme, err := admin.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	globex, err := admin.CreateTenant(ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: globex.ID, Name: "own", Kind: "mock"}, ""); err != nil {
		t.Fatal(err)
	}
	k := outageKeys{tenantID: acme.ID}
	if k.warm, _, err = admin.CreateKey(ctx, acme.ID, "warm"); err != nil {
		t.Fatal(err)
	}
	var revoked tenancy.APIKey
	if k.revoked, revoked, err = admin.CreateKey(ctx, acme.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	k.revokedID = revoked.ID
	if k.unused, _, err = admin.CreateKey(ctx, globex.ID, "unused"); err != nil {
		t.Fatal(err)
	}
	return k
}

// rideOut sends requests through an outage of four TTLs, one round every 5s of the
// injected clock, and checks who is answered: the keys used before it always, the unused
// key only with the key set. It checks the degraded counters.
func (o *outageGateway) rideOut(t *testing.T, k outageKeys, keySet bool) {
	t.Helper()
	var stale, staleRoutes int64
	for range 4 * outageTTL / (5 * time.Second) {
		o.clock.Advance(5 * time.Second)
		pastTTL := o.clock.Now().Sub(outageStart) >= outageTTL
		for _, key := range []string{k.warm, k.revoked} {
			if got := o.status(t, key); got != http.StatusOK {
				t.Fatalf("key used before the outage, %v into it: status %d, want 200", o.clock.Now().Sub(outageStart), got)
			}
			if pastTTL {
				stale++
				staleRoutes++
			}
		}
		got := o.status(t, k.unused)
		switch {
		case keySet && got != http.StatusOK:
			t.Fatalf("key from the key set: status %d, want 200", got)
		case keySet:
			// Never read from the store: the key from the key set, globex's provider
			// configuration from the snapshot read with it.
			stale++
			staleRoutes++
		case got != http.StatusServiceUnavailable:
			t.Fatalf("key never read, store down: status %d, want 503", got)
		}
	}
	st := o.gw.StoreStats()
	if st.AuthServedStale != stale {
		t.Errorf("AuthServedStale = %d, want %d", st.AuthServedStale, stale)
	}
	if st.RoutesServedStale != staleRoutes {
		t.Errorf("RoutesServedStale = %d, want %d", st.RoutesServedStale, staleRoutes)
	}
}

// checkTraced asserts every answered request's trace is in db, once.
func (o *outageGateway) checkTraced(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := o.gw.ForceFlush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	stored := readTraces(t, db)
	for _, id := range o.ids {
		if _, ok := stored[id]; !ok {
			t.Errorf("answered request %s has no trace", id)
		}
	}
	if got, distinct := countTraces(t, db); got != len(o.ids) || distinct != len(o.ids) {
		t.Errorf("count(*) = %d, count(DISTINCT id) = %d; want %d", got, distinct, len(o.ids))
	}
}

// TestStoreOutagePostgres cuts the gateway off PostgreSQL (store and sink) for four auth
// cache TTLs: the keys it had read keep being answered and traced, and with the key set
// so does a key never used; a key revoked on another replica during the outage is refused
// within 5s of the store returning.
func TestStoreOutagePostgres(t *testing.T) {
	for _, tt := range []struct {
		name   string
		keySet bool
	}{
		{"cache only", false},
		{"with the key set", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			direct, dbURL := newPGPool(t)
			proxy := pgtest.NewProxy(t)
			proxied, err := pgxpool.New(ctx, proxy.URL(t, dbURL))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxied.Close)
			sink, err := tracing.NewPostgresSink(ctx, proxied, tracing.PostgresSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			other := tenancy.NewService(tenancy.NewPostgresStore(direct), nil)
			k := newOutageKeys(t, other)
			o := startOutageGateway(t, tenancy.NewPostgresStore(proxied), sink, tt.keySet)
			for _, key := range []string{k.warm, k.revoked} {
				if got := o.status(t, key); got != http.StatusOK {
					t.Fatalf("before the outage: status %d", got)
				}
			}

			proxy.Cut()
			o.rideOut(t, k, tt.keySet)
			if err := other.RevokeKey(ctx, k.tenantID, k.revokedID); err != nil {
				t.Fatal(err)
			}
			o.clock.Advance(time.Second)
			if got := o.status(t, k.revoked); got != http.StatusOK {
				t.Fatalf("revoked on another replica, store still cut: status %d, want 200 (stale)", got)
			}
			proxy.Restore()
			o.clock.Advance(5 * time.Second) // the bound: min(TTL, 5s) after the store returns
			if got := o.status(t, k.revoked); got != http.StatusUnauthorized {
				t.Errorf("revoked key 5s after the store returned: status %d, want 401", got)
			}
			if got := o.status(t, k.warm); got != http.StatusOK {
				t.Errorf("active key after the outage: status %d, want 200", got)
			}
			db := stdlib.OpenDBFromPool(direct)
			defer db.Close()
			o.checkTraced(t, db)
		})
	}
}

// TestStoreOutageSQLite closes the store's SQLite handle for good (the sink writes
// through its own): keys read before keep being answered and traced.
func TestStoreOutageSQLite(t *testing.T) {
	for _, tt := range []struct {
		name   string
		keySet bool
	}{
		{"cache only", false},
		{"with the key set", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "loom.db")
			var dbs [2]*sql.DB // the store's, the sink's
			for i := range dbs {
				db, err := sqlitedb.Open(ctx, path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				dbs[i] = db
			}
			if err := migrations.Up(ctx, dbs[1], migrations.SQLite); err != nil {
				t.Fatal(err)
			}
			store := tenancy.NewSQLiteStore(dbs[0])
			k := newOutageKeys(t, tenancy.NewService(store, nil))
			o := startOutageGateway(t, store, tracing.NewSQLiteSink(dbs[1]), tt.keySet)
			for _, key := range []string{k.warm, k.revoked} {
				if got := o.status(t, key); got != http.StatusOK {
					t.Fatalf("before the outage: status %d", got)
				}
			}
			dbs[0].Close()
			o.rideOut(t, k, tt.keySet)
			o.checkTraced(t, dbs[1])
		})
	}
}
