package loom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// downSink refuses every batch, as a store that is down does.
type downSink struct{}

func (downSink) WriteBatch(ctx context.Context, _ []*tracing.Trace) error {
	return errors.New("store down")
}
func (downSink) Shutdown(context.Context) error { return nil }

// shutdownGateway is a gateway over store with one tenant key, served on loopback; the
// test shuts it down itself.
func shutdownGateway(t *testing.T, store tenancy.Store, routes []loom.Route, tc tracing.PipelineConfig) (*loom.Gateway, *httptest.Server, string) {
	t.Helper()
	gw, err := loom.New(loom.Config{Store: store, Routes: routes, Keyring: testKeyring(t, 1, 1), Tracing: tc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	ten, err := gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := gw.Admin().CreateKey(ctx, ten.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	return gw, srv, key
}

// chatOK sends a mock chat request and returns its trace id; it must be answered 200.
func chatOK(t *testing.T, srv *httptest.Server, key string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Request-Id")
}

// newSQLiteTestStore is a store in a migrated SQLite database of the test's own.
func newSQLiteTestStore(t *testing.T) tenancy.Store {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		t.Fatal(err)
	}
	return tenancy.NewSQLiteStore(db)
}

var mockRoute = []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}}

// A Shutdown whose ctx has already expired loses no trace to a healthy disk: what the
// (down) sink did not take stays in the spool, and the next start delivers all of it.
func TestShutdownExpiredContextKeepsTraces(t *testing.T) {
	store := newSQLiteTestStore(t)
	spool := t.TempDir()
	gw, srv, key := shutdownGateway(t, store, mockRoute, tracing.PipelineConfig{Sinks: []tracing.Sink{downSink{}}, SpoolDir: spool})
	const n = 200
	ids := make([]string, n)
	for i := range ids {
		ids[i] = chatOK(t, srv, key)
	}
	srv.Close()
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	gw.Shutdown(expired) // an error is expected: the sink took nothing
	if st := gw.TraceStats(); st.Lost != 0 {
		t.Errorf("Shutdown with an expired ctx lost %d traces (%+v)", st.Lost, st)
	}

	sink := tracing.NewMemorySink()
	gw2, err := loom.New(loom.Config{Store: store, Routes: mockRoute, Keyring: testKeyring(t, 1, 1), Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, SpoolDir: spool}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := gw2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, tr := range sink.Traces() {
		got[tr.ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("trace %s answered before the shutdown never arrived", id)
		}
	}
}

// A request that outlives the shutdown deadline does not take the trace pipeline's share:
// the traces of the requests that were answered still reach a healthy sink.
func TestShutdownLeavesTracesTheirShare(t *testing.T) {
	arrived := make(chan struct{}, 1)
	hangCtx, cancelHang := context.WithCancel(context.Background())
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-hangCtx.Done():
		}
	}))
	t.Cleanup(hang.Close)
	routes := append([]loom.Route{{Name: "hang", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: hang.URL}), Models: []string{"hang-1"}}}, mockRoute...)
	sink := tracing.NewMemorySink()
	// Nothing is shipped before Shutdown asks: the traces depend on its share of time.
	gw, srv, key := shutdownGateway(t, newSQLiteTestStore(t), routes,
		tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, SpoolDir: t.TempDir(), FlushInterval: time.Hour})
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = chatOK(t, srv, key)
	}
	t.Cleanup(cancelHang) // before the servers' cleanups, which wait for it
	go func() {           // in flight through the whole shutdown
		req, _ := http.NewRequestWithContext(hangCtx, http.MethodPost, srv.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"hang-1","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for gw.TraceStats().Recorded < n { // the answered requests' traces are recorded
		time.Sleep(time.Millisecond)
	}
	<-arrived

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err == nil || !strings.Contains(err.Error(), "requests still in flight") {
		t.Errorf("Shutdown: %v, want the in-flight request named", err)
	}
	got := map[string]bool{}
	for _, tr := range sink.Traces() {
		got[tr.ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("trace %s of an answered request did not reach the sink", id)
		}
	}
}
