package loom_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// A trace pipeline without a Keyring is refused unless TraceWithoutBodies says so: a master
// key that failed to load must not silently turn body recording off.
func TestKeyringRequiredForBodies(t *testing.T) {
	db, err := sqlitedb.Open(t.Context(), filepath.Join(t.TempDir(), "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tests := []struct {
		name    string
		cfg     loom.Config
		wantErr string // "" means New succeeds
	}{
		{"no keyring", loom.Config{Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewMemorySink()}}},
			"traces need Config.Keyring (or Tracing.Sealer) to seal their bodies; set Config.TraceWithoutBodies"},
		{"no keyring, bodies declined", loom.Config{TraceWithoutBodies: true, Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewMemorySink()}}}, ""},
		{"no keyring, no tracing", loom.Config{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Store = tenancy.NewSQLiteStore(db)
			if tt.cfg.Tracing.Sinks != nil {
				tt.cfg.Tracing.SpoolDir = t.TempDir()
			}
			gw, err := loom.New(tt.cfg)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				gw.Shutdown(t.Context())
			}
			if (tt.wantErr == "") != (got == "") || !strings.Contains(got, tt.wantErr) {
				t.Errorf("New: %q, want an error containing %q", got, tt.wantErr)
			}
		})
	}
}

// OnRequest sees each chat completion once, with what it came to and nothing secret.
func TestOnRequest(t *testing.T) {
	var mu sync.Mutex
	var got []loom.RequestInfo
	e := newEnv(t, []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		func(c *loom.Config) {
			c.OnRequest = func(r *http.Request, info loom.RequestInfo) {
				mu.Lock()
				got = append(got, info)
				mu.Unlock()
			}
		})
	resp := e.post(t, e.key, `{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	miss := e.post(t, e.key, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`)
	io.Copy(io.Discard, miss.Body)
	miss.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d calls, want 2: %+v", len(got), got)
	}
	for _, g := range got {
		if g.Latency <= 0 || g.Overhead < 0 || g.Overhead > g.Latency {
			t.Errorf("timings %+v, want 0 ≤ overhead ≤ latency, latency > 0", g)
		}
	}
	want := []loom.RequestInfo{
		{TraceID: resp.Header.Get("X-Request-Id"), TenantID: e.tenantID, KeyID: e.keyID, Model: "mock-1", Provider: "mock", Status: 200},
		{TraceID: miss.Header.Get("X-Request-Id"), TenantID: e.tenantID, KeyID: e.keyID, Model: "nope", Status: 404},
	}
	for i := range got {
		got[i].Latency, got[i].Overhead = 0, 0
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnRequest calls (-want +got):\n%s", diff)
	}
}
