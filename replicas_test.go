package loom_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// replica is one gateway process's worth: its own pool on the shared database, its own
// caches, served on loopback.
type replica struct {
	gw  *loom.Gateway
	srv *httptest.Server
}

func startReplica(t *testing.T, url string) *replica {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	gw, err := loom.New(loom.Config{
		Store:   tenancy.NewPostgresStore(pool),
		Routes:  []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Keyring: testKeyring(t, 1, 1),
		// An hour: only the change notifications can explain a change seen in seconds.
		AuthCacheTTL:     time.Hour,
		KeyUsageInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{gw: gw, srv: httptest.NewServer(gw)}
	t.Cleanup(func() {
		r.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return r
}

// status sends a chat request for model with key and returns the status.
func (r *replica) status(t *testing.T, key, model string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// within polls cond until it holds, failing the test if that takes longer than d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
}

// listeners counts the gateways' notification connections to the database.
func listeners(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, tenancy.NotifyApplicationName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Two gateways on one PostgreSQL database: what is changed through one (or by any other
// client of the database, as the admin command line is) takes effect on the other within
// 2 seconds, before and after the notification connections are cut.
func TestChangesReachOtherReplicas(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	admin, err := pgxpool.New(ctx, url) // a third client: psql, the admin command line
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	db := stdlib.OpenDBFromPool(admin)
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a, b := startReplica(t, url), startReplica(t, url)
	// Each expires its caches when it starts listening (New waits for that) and again
	// whenever it reconnects: between those, only a notification explains a cached
	// answer going away.
	resets := func(n int64) func() bool {
		return func() bool { return a.gw.StoreStats().ChangeResets == n && b.gw.StoreStats().ChangeResets == n }
	}
	within(t, 5*time.Second, "both gateways listening", resets(1))

	acme, err := a.gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	newKey := func(tenantID string) (string, tenancy.APIKey) {
		t.Helper()
		raw, k, err := a.gw.Admin().CreateKey(ctx, tenantID, "k")
		if err != nil {
			t.Fatal(err)
		}
		if st := b.status(t, raw, "mock-1"); st != 200 {
			t.Fatalf("a new key on the other gateway: %d", st)
		}
		return raw, k
	}
	revokedOnB := func(what, raw string, revoke func()) {
		t.Helper()
		revoke()
		within(t, 2*time.Second, what, func() bool { return b.status(t, raw, "mock-1") == 401 })
	}

	raw, k := newKey(acme.ID)
	revokedOnB("a key revoked through the other gateway", raw, func() {
		if err := a.gw.Admin().RevokeKey(ctx, acme.ID, k.ID); err != nil {
			t.Fatal(err)
		}
	})
	raw, k = newKey(acme.ID)
	revokedOnB("a key revoked by another client of the database", raw, func() {
		if _, err := admin.Exec(ctx, `UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE id = $1`, k.ID); err != nil {
			t.Fatal(err)
		}
	})

	// A deactivated tenant: all its keys, at once.
	globex, _ := a.gw.Admin().CreateTenant(ctx, "globex")
	g1, _ := newKey(globex.ID)
	g2, _ := newKey(globex.ID)
	if err := a.gw.Admin().SetTenantStatus(ctx, globex.ID, tenancy.TenantInactive); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "a tenant deactivated through the other gateway", func() bool {
		return b.status(t, g1, "mock-1") == 403 && b.status(t, g2, "mock-1") == 403
	})

	// A provider configuration: put, changed, deleted.
	body := fixture(t, "openai_chat_nonstream_usage.json")
	up1, up2 := newFakeUpstream(t, 200, body), newFakeUpstream(t, 200, body)
	own, _ := newKey(acme.ID)
	put := func(up *fakeUpstream, key string) {
		t.Helper()
		if err := a.gw.Admin().PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: acme.ID, Name: "own", Kind: "openai",
			BaseURL: up.URL + "/v1", Models: []string{"gpt-4o"}}, key); err != nil {
			t.Fatal(err)
		}
	}
	reached := func(up *fakeUpstream, auth string) bool {
		if b.status(t, own, "own/gpt-4o") != 200 {
			return false
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		return len(up.calls) > 0 && up.calls[len(up.calls)-1].Header.Get("Authorization") == auth
	}
	put(up1, "sk-first-upstream-key")
	within(t, 2*time.Second, "a provider config put through the other gateway", func() bool { return reached(up1, "Bearer sk-first-upstream-key") })
	put(up2, "sk-second-upstream-key")
	within(t, 2*time.Second, "a provider config changed through the other gateway", func() bool { return reached(up2, "Bearer sk-second-upstream-key") })
	if err := a.gw.Admin().DeleteProviderConfig(ctx, acme.ID, "own"); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "a provider config deleted through the other gateway", func() bool { return b.status(t, own, "own/gpt-4o") == 404 })

	// Cut every notification connection. A change made while they are down is not
	// missed (a reconnection purges the caches), and once they are back, changes arrive
	// as before.
	raw, k = newKey(acme.ID)
	var cut int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, tenancy.NotifyApplicationName).Scan(&cut); err != nil || cut != 2 {
		t.Fatalf("cut %d notification connections (%v), want 2", cut, err)
	}
	revokedOnB("a key revoked while the notification connections were cut", raw, func() {
		if err := a.gw.Admin().RevokeKey(ctx, acme.ID, k.ID); err != nil {
			t.Fatal(err)
		}
	})
	within(t, 5*time.Second, "both gateways listening again", resets(2))
	if n := listeners(t, admin); n != 2 {
		t.Fatalf("%d notification connections, want 2", n)
	}
	if st := b.gw.StoreStats(); st.ChangeErrors < 1 || st.Changes < 8 {
		t.Errorf("StoreStats = %+v: want the cut counted and the changes before it", st)
	}
	raw, k = newKey(acme.ID)
	revokedOnB("a key revoked after the notification connections came back", raw, func() {
		if err := a.gw.Admin().RevokeKey(ctx, acme.ID, k.ID); err != nil {
			t.Fatal(err)
		}
	})
	// And the other way round: b's writes reach a.
	raw, k = newKey(acme.ID)
	if st := a.status(t, raw, "mock-1"); st != 200 {
		t.Fatalf("status on a: %d", st)
	}
	if err := b.gw.Admin().RevokeKey(ctx, acme.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "a key revoked through b, on a", func() bool { return a.status(t, raw, "mock-1") == 401 })
}
