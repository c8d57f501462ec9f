package analytics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// backend is one database the API suite runs against, fresh for each test; its sink runs
// the rollup step, and it returns the folder of the deltas, unless rollups is false.
type backend struct {
	name string
	open func(t *testing.T, rollups bool) (tenancy.Store, tracing.Sink, analytics.Store, rollup.Folder)
}

var backends = []backend{
	{"postgres", func(t *testing.T, rollups bool) (tenancy.Store, tracing.Sink, analytics.Store, rollup.Folder) {
		ctx := context.Background()
		pool, err := pgxpool.New(ctx, pgtest.New(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		db := stdlib.OpenDBFromPool(pool)
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
			t.Fatal(err)
		}
		var (
			opts tracing.PostgresSinkOptions
			fold rollup.Folder
		)
		if rollups {
			opts.TxSteps = []tracing.PostgresTxStep{rollup.Postgres}
			fold = rollup.PostgresFolder(pool)
		}
		sink, err := tracing.NewPostgresSink(ctx, pool, opts)
		if err != nil {
			t.Fatal(err)
		}
		return tenancy.NewPostgresStore(pool), sink, analytics.NewPostgresStore(pool), fold
	}},
	{"sqlite", func(t *testing.T, rollups bool) (tenancy.Store, tracing.Sink, analytics.Store, rollup.Folder) {
		ctx := context.Background()
		db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		var (
			steps []tracing.SQLiteTxStep
			fold  rollup.Folder
		)
		if rollups {
			steps = append(steps, rollup.SQLite)
			fold = rollup.SQLiteFolder(db)
		}
		return tenancy.NewSQLiteStore(db), tracing.NewSQLiteSink(db, steps...), analytics.NewSQLiteStore(db), fold
	}},
}

// tenantKey is a tenant and one of its API keys.
type tenantKey struct{ id, keyID, key string }

// apiEnv is a gateway with the analytics API over a real database, served on loopback,
// with two tenants.
type apiEnv struct {
	srv  *httptest.Server
	gw   *loom.Gateway
	sink tracing.Sink
	fold rollup.Folder // nil without rollups
	a, b tenantKey
}

func newAPIEnv(t *testing.T, be backend) *apiEnv { return newAPIEnvRollups(t, be, true) }

func newAPIEnvRollups(t *testing.T, be backend, rollups bool) *apiEnv {
	t.Helper()
	ctx := context.Background()
	store, sink, reads, fold := be.open(t, rollups)
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	// A fake OpenAI upstream replaying a recorded stream with two parallel tool calls.
	recorded, err := os.ReadFile("../testdata/fixtures/openai_chat_stream_tool_calls_parallel.sse")
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Write(recorded)
	}))
	t.Cleanup(upstream.Close)
	gw, err := loom.New(loom.Config{
		Store:   store,
		Keyring: keyring,
		Routes: []loom.Route{
			{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}},
			{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: upstream.URL + "/v1", APIKey: "sk-test"})},
		},
		Tracing:   tracing.PipelineConfig{Sinks: []tracing.Sink{sink}},
		Analytics: reads,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{gw: gw, sink: sink, fold: fold, srv: httptest.NewServer(gw)}
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	for _, tk := range []*tenantKey{&e.a, &e.b} {
		ten, err := gw.Admin().CreateTenant(ctx, "tenant")
		if err != nil {
			t.Fatal(err)
		}
		raw, k, err := gw.Admin().CreateKey(ctx, ten.ID, "analytics")
		if err != nil {
			t.Fatal(err)
		}
		*tk = tenantKey{id: ten.ID, keyID: k.ID, key: raw}
	}
	return e
}

// insert writes traces through the real sink, in batches, and folds the deltas of the
// first half, so the queries read folded rollups and deltas together.
func (e *apiEnv) insert(t *testing.T, traces ...*tracing.Trace) {
	t.Helper()
	half := len(traces) / 2
	for i := 0; i < len(traces); {
		end := min(i+500, len(traces))
		if i < half {
			end = min(end, half)
		}
		if err := e.sink.WriteBatch(context.Background(), traces[i:end]); err != nil {
			t.Fatal(err)
		}
		i = end
		if i == half && e.fold != nil {
			if _, err := e.fold.All(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// get sends GET path with key ("" for none) and returns the status and body.
func (e *apiEnv) get(t *testing.T, key, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// getJSON sends GET path and decodes its 200 answer into v.
func (e *apiEnv) getJSON(t *testing.T, key, path string, v any) {
	t.Helper()
	status, _, body := e.get(t, key, path)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// listAll pages through GET /v1/traces?query and returns every row.
func (e *apiEnv) listAll(t *testing.T, key, query string) []analytics.Trace {
	t.Helper()
	var out []analytics.Trace
	path := "/v1/traces?limit=200&" + query
	for range 100 { // more pages than any test has traces for: a cursor that never ends
		var p analytics.ListPage
		e.getJSON(t, key, path, &p)
		out = append(out, p.Data...)
		if !p.HasMore {
			return out
		}
		path = "/v1/traces?limit=200&" + query + "&cursor=" + *p.NextCursor
	}
	t.Fatalf("GET /v1/traces?%s: the pages do not end", query)
	return nil
}

// newTrace is a successful, priced trace of tenant tk at a microsecond-precise time.
func newTrace(tk tenantKey, at time.Time) *tracing.Trace {
	cost := int64(1500)
	return &tracing.Trace{
		ID: uuid.Must(uuid.NewV7()).String(), CreatedAt: at.UTC().Truncate(time.Microsecond),
		TenantID: tk.id, APIKeyID: tk.keyID, RequestID: "req-1",
		Model: "gpt-4o", ServedModel: "gpt-4o-2024-08-06", Provider: "openai", Status: 200,
		PromptTokens: 100, CompletionTokens: 20, CachedTokens: 10, ReasoningTokens: 5,
		UsageSource: tracing.UsageReported, CostMicroUSD: &cost, PriceVersion: "test-prices",
		LatencyUS: 2000, TTFBUS: 800, OverheadUS: 90, KeyVersion: 1, FinishReasons: []string{"stop"},
	}
}

// row is a trace as the API lists it.
func row(t *tracing.Trace) analytics.Trace {
	return analytics.Trace{
		ID: t.ID, CreatedAt: t.CreatedAt, TenantID: t.TenantID, APIKeyID: t.APIKeyID, RequestID: t.RequestID,
		Model: t.Model, ServedModel: t.ServedModel, Provider: t.Provider, Stream: t.Stream, Status: t.Status,
		ErrorType: t.ErrorType, ClientAborted: t.ClientAborted, PromptTokens: t.PromptTokens,
		CompletionTokens: t.CompletionTokens, CachedTokens: t.CachedTokens, ReasoningTokens: t.ReasoningTokens,
		UsageSource: string(t.UsageSource), CostMicroUSD: t.CostMicroUSD, PriceVersion: t.PriceVersion,
		LatencyUS: t.LatencyUS, TTFBUS: t.TTFBUS, OverheadUS: t.OverheadUS, ResponseTruncated: t.ResponseTruncated,
		KeyVersion: t.KeyVersion, FieldsCut: t.FieldsCut, UpstreamRetries: t.UpstreamRetries,
		UsageMethod: t.UsageMethod, CacheWrite5mTokens: t.CacheWrite5mTokens, CacheWrite1hTokens: t.CacheWrite1hTokens,
		AudioPromptTokens: t.AudioPromptTokens, AudioCompletionTokens: t.AudioCompletionTokens,
		AcceptedPredictionTokens: t.AcceptedPredictionTokens, RejectedPredictionTokens: t.RejectedPredictionTokens,
		ServiceTier: t.ServiceTier, FinishReasons: append([]string{}, t.FinishReasons...),
	}
}

// newestFirst returns the rows of the traces keep selects, in the API's order.
func newestFirst(traces []*tracing.Trace, keep func(*tracing.Trace) bool) []analytics.Trace {
	var out []analytics.Trace
	for _, t := range traces {
		if keep == nil || keep(t) {
			out = append(out, row(t))
		}
	}
	slices.SortFunc(out, func(a, b analytics.Trace) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
}

func ids(rows []analytics.Trace) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// expect computes the metrics of traces the way the API defines them, answered from the
// rollups: the percentiles are the histogram estimates of the exact ones (each within
// rollup.RelativeError, see rollup's tests).
func expect(traces []*tracing.Trace) analytics.Metrics {
	m := expectExact(traces)
	for _, p := range []**int64{&m.LatencyP95US, &m.TTFBP95US, &m.OverheadP95US} {
		if *p != nil {
			e := rollup.Estimate(**p)
			*p = &e
		}
	}
	m.PercentilesApproximate = len(traces) > 0
	return m
}

// expectExact computes the metrics of traces with exact percentiles, as the API answers
// from the traces alone.
func expectExact(traces []*tracing.Trace) analytics.Metrics {
	var (
		m                    analytics.Metrics
		lat, ttfb, ovrs      []int64
		latSum, ttfbSum, ovr int64
	)
	for _, t := range traces {
		m.Requests++
		if t.Status >= 400 {
			m.Errors++
		}
		m.PromptTokens += t.PromptTokens
		m.CompletionTokens += t.CompletionTokens
		m.CachedTokens += t.CachedTokens
		m.ReasoningTokens += t.ReasoningTokens
		if t.CostMicroUSD == nil {
			m.UnpricedRequests++
		} else {
			m.CostMicroUSD += *t.CostMicroUSD
		}
		lat = append(lat, t.LatencyUS)
		latSum += t.LatencyUS
		if t.TTFBUS > 0 {
			ttfb = append(ttfb, t.TTFBUS)
			ttfbSum += t.TTFBUS
		}
		ovr += t.OverheadUS
		ovrs = append(ovrs, t.OverheadUS)
	}
	div := func(a int64, b int) *float64 {
		if b == 0 {
			return nil
		}
		r := float64(a) / float64(b)
		return &r
	}
	m.ErrorRate = div(m.Errors, len(traces))
	m.LatencyAvgUS = div(latSum, len(traces))
	m.OverheadAvgUS = div(ovr, len(traces))
	m.TTFBAvgUS = div(ttfbSum, len(ttfb))
	m.LatencyP95US, m.TTFBP95US, m.OverheadP95US = p95(lat), p95(ttfb), p95(ovrs)
	return m
}

// p95 is the smallest value with at least 95 % of the values at or below it.
func p95(v []int64) *int64 {
	if len(v) == 0 {
		return nil
	}
	slices.Sort(v)
	for i, x := range v {
		if (i+1)*100 >= 95*len(v) {
			return &x
		}
	}
	panic("unreachable")
}
