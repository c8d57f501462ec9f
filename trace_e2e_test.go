package loom_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/estimate"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/pricing"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// These tests follow traces from a client request through the gateway, the spool and a real
// sink into the migrated schema of each database, and read them back with SQL.

// traceRow is one row of the traces table, read the same way from both dialects.
type traceRow struct {
	ID               string
	TenantID         string
	APIKeyID         string
	Model            string
	ServedModel      string
	Provider         string
	Stream           bool
	Status           int
	ErrorType        string
	ClientAborted    bool
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
	ReasoningTokens  int64
	UsageSource      string
	CostMicroUSD     *int64
	PriceVersion     string
	LatencyUS        int64
	TTFBUS           int64
	OverheadUS       int64
	RequestSealed    []byte
	ResponseSealed   []byte
	KeyVersion       int
}

const traceRowQuery = `SELECT CAST(id AS TEXT), tenant_id, api_key_id, model, served_model, provider, stream,
	status, error_type, client_aborted, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
	usage_source, cost_micro_usd, price_version, latency_us, ttfb_us, overhead_us,
	request_sealed, response_sealed, key_version FROM traces`

// readTraces returns every stored trace by id, failing on an id stored twice.
func readTraces(t *testing.T, db *sql.DB) map[string]traceRow {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), traceRowQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]traceRow{}
	for rows.Next() {
		var r traceRow
		if err := rows.Scan(&r.ID, &r.TenantID, &r.APIKeyID, &r.Model, &r.ServedModel, &r.Provider, &r.Stream,
			&r.Status, &r.ErrorType, &r.ClientAborted, &r.PromptTokens, &r.CompletionTokens, &r.CachedTokens, &r.ReasoningTokens,
			&r.UsageSource, &r.CostMicroUSD, &r.PriceVersion, &r.LatencyUS, &r.TTFBUS, &r.OverheadUS,
			&r.RequestSealed, &r.ResponseSealed, &r.KeyVersion); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[r.ID]; dup {
			t.Errorf("trace %s stored twice", r.ID)
		}
		out[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// countTraces returns count(*) and count(DISTINCT id) of traces.
func countTraces(t *testing.T, db *sql.DB) (n, distinct int) {
	t.Helper()
	if err := db.QueryRowContext(context.Background(), "SELECT count(*), count(DISTINCT id) FROM traces").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	return n, distinct
}

func testKeyring(t testing.TB, current int, versions ...int) *loomcrypto.Keyring {
	t.Helper()
	masters := map[int][]byte{}
	for _, v := range versions {
		masters[v] = bytes.Repeat([]byte{byte(v)}, 32)
	}
	k, err := loomcrypto.NewKeyring(current, masters)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newPGPool connects to a fresh migrated PostgreSQL database and returns the pool and the
// database's URL.
func newPGPool(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := pgtest.New(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(context.Background(), db, migrations.Postgres); err != nil {
		t.Fatal(err)
	}
	return pool, dbURL
}

// sinkEnv is a gateway whose traces go through a spool into a real database sink.
type sinkEnv struct {
	dialect string
	db      *sql.DB // reads the traces back
	store   tenancy.Store
	newSink func(t *testing.T) tracing.Sink
	reads   analytics.Store // the analytics API's store, on the same database
	routes  []loom.Route
	dir     string // holds the spools; lives as long as the test that made the env
	starts  int

	gw       *loom.Gateway
	srv      *httptest.Server
	keyring  *loomcrypto.Keyring
	tenantID string
	keyID    string
	key      string
}

func newSinkEnv(t *testing.T, dialect string, routes []loom.Route) *sinkEnv {
	t.Helper()
	ctx := context.Background()
	s := &sinkEnv{dialect: dialect, routes: routes, dir: t.TempDir()}
	switch dialect {
	case migrations.Postgres:
		pool, _ := newPGPool(t)
		s.db = stdlib.OpenDBFromPool(pool)
		t.Cleanup(func() { s.db.Close() })
		s.store, s.reads = tenancy.NewPostgresStore(pool), analytics.NewPostgresStore(pool)
		s.newSink = func(t *testing.T) tracing.Sink {
			sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return sink
		}
	case migrations.SQLite:
		db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		s.db = db
		s.store, s.reads = tenancy.NewSQLiteStore(db), analytics.NewSQLiteStore(db)
		s.newSink = func(*testing.T) tracing.Sink { return tracing.NewSQLiteSink(db) }
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	t.Cleanup(func() { s.stop(t) })
	s.start(t, testKeyring(t, 1, 1))
	ten, err := s.gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := s.gw.Admin().CreateKey(ctx, ten.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	s.tenantID, s.keyID, s.key = ten.ID, k.ID, raw
	return s
}

// start (re)starts the gateway over the same database, with a fresh sink and spool.
func (s *sinkEnv) start(t *testing.T, keyring *loomcrypto.Keyring) {
	t.Helper()
	s.stop(t)
	s.starts++
	spool := filepath.Join(s.dir, fmt.Sprintf("spool%d", s.starts))
	gw, err := loom.New(loom.Config{
		Store:     s.store,
		Routes:    s.routes,
		Keyring:   keyring,
		Tracing:   tracing.PipelineConfig{Sinks: []tracing.Sink{s.newSink(t)}, SpoolDir: spool},
		Analytics: s.reads,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.gw, s.keyring = gw, keyring
	s.srv = httptest.NewServer(gw)
}

// stop closes the HTTP server (waiting for requests in flight) and shuts the gateway down,
// which flushes every trace.
func (s *sinkEnv) stop(t *testing.T) {
	t.Helper()
	if s.gw == nil {
		return
	}
	s.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.gw.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	s.gw, s.srv = nil, nil
}

func (s *sinkEnv) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.gw.ForceFlush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func (s *sinkEnv) client() *openai.Client {
	c := openai.NewClient(option.WithBaseURL(s.srv.URL+"/v1"), option.WithAPIKey(s.key), option.WithMaxRetries(0))
	return &c
}

// Markers in a prompt tell the trace upstream how to answer.
const (
	markerFail  = "[upstream:fail]"
	markerAbort = "[upstream:hang]"
)

// newTraceUpstream is an OpenAI upstream replaying recorded answers: a 401 error when the
// request carries markerFail; three chunks and then nothing until the client leaves when it
// carries markerAbort; else the recorded stream or completion.
func newTraceUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	completion := fixture(t, "openai_chat_cached_tokens.json")
	events := sseEvents(fixture(t, "openai_chat_stream_tool_calls_parallel.sse"))
	unauthorized := fixture(t, "openai_error_401_invalid_api_key.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does the server notice a client that leaves.
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Stream bool `json:"stream"`
		}
		json.Unmarshal(body, &req)
		switch {
		case bytes.Contains(body, []byte(markerFail)):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write(unauthorized)
		case bytes.Contains(body, []byte(markerAbort)):
			w.Header().Set("Content-Type", "text/event-stream")
			for _, word := range []string{"one", "two", "three"} {
				io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"`+word+`"},"finish_reason":null}]}`+"\n\n")
				w.(http.Flusher).Flush()
			}
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second): // deadlock guard
				t.Error("the gateway did not cancel the upstream request of a client that left")
			}
		case req.Stream:
			w.Header().Set("Content-Type", "text/event-stream")
			for _, ev := range events {
				w.Write(append(ev, "\n\n"...))
				w.(http.Flusher).Flush()
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write(completion)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// wantCost is the cost the gateway should store: priced by the served model, else by the
// model asked for; nil without usage or price.
func wantCost(t *testing.T, r traceRow) *int64 {
	t.Helper()
	if r.UsageSource == string(tracing.UsageMissing) {
		return nil
	}
	prices, err := pricing.Default()
	if err != nil {
		t.Fatal(err)
	}
	u := pricing.Usage{PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, CachedTokens: r.CachedTokens}
	for _, m := range []string{r.ServedModel, r.Model} {
		if c, ok := prices.Cost(m, u); ok && m != "" {
			return &c
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// containsWindow reports whether any n-byte window of plain occurs in b.
func containsWindow(b, plain []byte, n int) bool {
	for i := 0; i+n <= len(plain); i += n / 2 {
		if bytes.Contains(b, plain[i:i+n]) {
			return true
		}
	}
	return false
}

func TestTracesEndToEnd(t *testing.T) {
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			up := newTraceUpstream(t)
			s := newSinkEnv(t, dialect, []loom.Route{{Name: "openai",
				Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL + "/v1", APIKey: "sk-upstream"}),
				Models:   []string{"gpt-4o"}}})
			testTracesEndToEnd(t, s)
		})
	}
}

func testTracesEndToEnd(t *testing.T, s *sinkEnv) {
	ctx := context.Background()
	prices, err := pricing.Default()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "zebra-quartz-7731 is the launch code"
	abortBody := `{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"` + secret + " " + markerAbort + `"}]}`

	tests := []struct {
		name string
		// send makes the request and returns the trace id the gateway answered with.
		send func(t *testing.T) string
		want traceRow // ID, tenant, key, price version and key version are filled in below
		// wantResponse is in the opened response body.
		wantResponse []byte
	}{
		{
			name: "non-streaming success",
			send: func(t *testing.T) string {
				var hr *http.Response
				c, err := s.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:    "gpt-4o",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(secret)},
				}, option.WithResponseInto(&hr))
				if err != nil {
					t.Fatal(err)
				}
				if c.Usage.PromptTokens != 3663 {
					t.Errorf("client saw prompt_tokens %d, want 3663", c.Usage.PromptTokens)
				}
				return hr.Header.Get("X-Request-Id")
			},
			want: traceRow{Model: "gpt-4o", ServedModel: "gpt-4o-2024-08-06", Provider: "openai", Status: 200,
				PromptTokens: 3663, CompletionTokens: 117, CachedTokens: 3584, UsageSource: "reported",
				// Hand-checked: gpt-4o costs 2.50 / 1.25 cached / 10.00 USD per million tokens;
				// 79·2.5 + 3584·1.25 + 117·10 = 5847.5 µUSD, rounded half up.
				CostMicroUSD: ptr[int64](5848)},
			wantResponse: fixture(t, "openai_chat_cached_tokens.json"),
		},
		{
			name: "streaming success",
			send: func(t *testing.T) string {
				var hr *http.Response
				st := s.client().Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
					Model:    "gpt-4o",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(secret)},
				}, option.WithResponseInto(&hr))
				var acc openai.ChatCompletionAccumulator
				for st.Next() {
					acc.AddChunk(st.Current())
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				if len(acc.Choices) == 0 || len(acc.Choices[0].Message.ToolCalls) != 2 {
					t.Errorf("client got %+v, want two tool calls", acc.Choices)
				}
				return hr.Header.Get("X-Request-Id")
			},
			want: traceRow{Model: "gpt-4o", ServedModel: "gpt-4o-2024-08-06", Provider: "openai", Stream: true, Status: 200,
				PromptTokens: 75, CompletionTokens: 53, UsageSource: "reported"},
			wantResponse: []byte(`"name":"secret_retrieval_tool"`),
		},
		{
			name: "upstream error",
			send: func(t *testing.T) string {
				_, err := s.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:    "gpt-4o",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(secret + " " + markerFail)},
				})
				var apiErr *openai.Error
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
					t.Fatalf("err = %v, want the upstream's 401 invalid_api_key", err)
				}
				return apiErr.Response.Header.Get("X-Request-Id")
			},
			want:         traceRow{Model: "gpt-4o", Provider: "openai", Status: 401, ErrorType: "invalid_request_error", UsageSource: "missing"},
			wantResponse: fixture(t, "openai_error_401_invalid_api_key.json"),
		},
		{
			name: "client abort mid-stream",
			send: func(t *testing.T) string {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.srv.URL+"/v1/chat/completions", strings.NewReader(abortBody))
				req.Header.Set("Authorization", "Bearer "+s.key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				buf := make([]byte, 4096)
				var got []byte
				for bytes.Count(got, []byte("data:")) < 3 {
					n, err := resp.Body.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						t.Fatalf("read: %v (got %q)", err, got)
					}
				}
				cancel()
				return resp.Header.Get("X-Request-Id")
			},
			want: traceRow{Model: "openai/gpt-4o", ServedModel: "gpt-4o-2024-08-06", Provider: "openai", Stream: true, Status: 200,
				// Counted by the tokenizer: the prompt by OpenAI's chat rules, the completion
				// over the content relayed ("one", "two", "three").
				ClientAborted: true, PromptTokens: estimate.New().Count("gpt-4o", []byte(abortBody), nil).PromptTokens,
				CompletionTokens: estimate.New().Tokens("gpt-4o", "onetwothree"), UsageSource: "estimated"},
			wantResponse: []byte(`"three"`),
		},
	}

	ids := make([]string, len(tests))
	for i, tt := range tests {
		if ids[i] = tt.send(t); ids[i] == "" {
			t.Fatalf("%s: no x-request-id", tt.name)
		}
	}
	// The abort's handler records its trace once it has seen the client leave, which may be
	// just after the client returned: wait for all four.
	deadline := time.Now().Add(20 * time.Second)
	var rows map[string]traceRow
	for {
		s.flush(t)
		if rows = readTraces(t, s.db); len(rows) >= len(tests) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(rows) != len(tests) {
		t.Fatalf("%d traces stored, want %d", len(rows), len(tests))
	}

	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := rows[ids[i]]
			if !ok {
				t.Fatalf("no trace with the id %s the client was given", ids[i])
			}
			want := tt.want
			want.ID, want.TenantID, want.APIKeyID = ids[i], s.tenantID, s.keyID
			want.PriceVersion, want.KeyVersion = prices.Version(), 1
			if c := wantCost(t, want); want.CostMicroUSD == nil {
				want.CostMicroUSD = c
			} else if *c != *want.CostMicroUSD {
				t.Errorf("pricing.Default().Cost = %d, hand-checked %d", *c, *want.CostMicroUSD)
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(traceRow{}, "LatencyUS", "TTFBUS", "OverheadUS", "RequestSealed", "ResponseSealed")); diff != "" {
				t.Errorf("stored trace (-want +got):\n%s", diff)
			}
			if got.LatencyUS <= 0 || got.TTFBUS <= 0 || got.TTFBUS > got.LatencyUS || got.OverheadUS < 0 || got.OverheadUS > got.LatencyUS {
				t.Errorf("timings: latency %dµs, ttfb %dµs, overhead %dµs; want 0 < ttfb ≤ latency, 0 ≤ overhead ≤ latency",
					got.LatencyUS, got.TTFBUS, got.OverheadUS)
			}

			// The bodies are sealed: no plaintext in the row, and they open only for this
			// tenant and this trace.
			for what, sealed := range map[string][]byte{"request": got.RequestSealed, "response": got.ResponseSealed} {
				if len(sealed) == 0 {
					t.Fatalf("no sealed %s body", what)
				}
				if bytes.Contains(sealed, []byte("zebra-quartz")) {
					t.Errorf("the sealed %s body holds the prompt in plaintext", what)
				}
			}
			req, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(got.ID, tracing.BodyRequest), got.KeyVersion, got.RequestSealed)
			if err != nil {
				t.Fatalf("open request: %v", err)
			}
			if !bytes.Contains(req, []byte(secret)) {
				t.Errorf("opened request = %q, want it to hold the prompt", req)
			}
			resp, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(got.ID, tracing.BodyResponse), got.KeyVersion, got.ResponseSealed)
			if err != nil {
				t.Fatalf("open response: %v", err)
			}
			if !bytes.Contains(resp, tt.wantResponse) {
				t.Errorf("opened response = %q, want it to hold %q", resp, tt.wantResponse)
			}
			if containsWindow(got.ResponseSealed, resp, 16) {
				t.Error("the sealed response body holds plaintext of the response")
			}
			other := ids[(i+1)%len(ids)]
			if _, err := s.keyring.Open("another-tenant", tracing.BodyRecordID(got.ID, tracing.BodyRequest), got.KeyVersion, got.RequestSealed); err == nil {
				t.Error("the request body opened under another tenant id")
			}
			if _, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(other, tracing.BodyResponse), got.KeyVersion, got.ResponseSealed); err == nil {
				t.Error("the response body opened under another trace id")
			}
			// Swapped: each body opens only as the part it was sealed as.
			if _, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(got.ID, tracing.BodyResponse), got.KeyVersion, got.RequestSealed); err == nil {
				t.Error("the request body opened as the response body")
			}
			if _, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(got.ID, tracing.BodyRequest), got.KeyVersion, got.ResponseSealed); err == nil {
				t.Error("the response body opened as the request body")
			}
		})
	}

	t.Run("immutable", func(t *testing.T) {
		for _, stmt := range []string{"UPDATE traces SET status = 1", "DELETE FROM traces"} {
			if _, err := s.db.ExecContext(ctx, stmt); err == nil {
				t.Errorf("%s: succeeded, want it refused", stmt)
			}
		}
		if diff := cmp.Diff(rows, readTraces(t, s.db)); diff != "" {
			t.Errorf("traces changed (-before +after):\n%s", diff)
		}
	})

	t.Run("key rotation", func(t *testing.T) {
		// A gateway with master key versions 2 (current) and 1 writes new rows under 2; the
		// rows written under 1 still open.
		s.start(t, testKeyring(t, 2, 1, 2))
		var hr *http.Response
		if _, err := s.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(secret)},
		}, option.WithResponseInto(&hr)); err != nil {
			t.Fatal(err)
		}
		newID := hr.Header.Get("X-Request-Id")
		s.flush(t)
		after := readTraces(t, s.db)
		if len(after) != len(rows)+1 {
			t.Fatalf("%d traces, want %d", len(after), len(rows)+1)
		}
		for id, r := range after {
			wantVersion := 1
			if id == newID {
				wantVersion = 2
			}
			if r.KeyVersion != wantVersion {
				t.Errorf("trace %s: key_version %d, want %d", id, r.KeyVersion, wantVersion)
			}
			for part, sealed := range map[string][]byte{tracing.BodyRequest: r.RequestSealed, tracing.BodyResponse: r.ResponseSealed} {
				if _, err := s.keyring.Open(s.tenantID, tracing.BodyRecordID(id, part), r.KeyVersion, sealed); err != nil {
					t.Errorf("trace %s (key version %d): does not open with the rotated keyring: %v", id, r.KeyVersion, err)
				}
			}
		}
		if _, err := testKeyring(t, 1, 1).Open(s.tenantID, tracing.BodyRecordID(newID, tracing.BodyRequest), 2, after[newID].RequestSealed); err == nil {
			t.Error("a version 2 body opened with a keyring holding only version 1")
		}
	})
}

// TestTraceStoreOutage: while the trace store is unreachable, requests are answered at once;
// when it is back, every trace arrives, once.
func TestTraceStoreOutage(t *testing.T) {
	ctx := context.Background()
	direct, dbURL := newPGPool(t)
	proxy := pgtest.NewProxy(t)
	proxied, err := pgxpool.New(ctx, proxy.URL(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxied.Close)
	sink, err := tracing.NewPostgresSink(ctx, proxied, tracing.PostgresSinkOptions{}) // needs the database
	if err != nil {
		t.Fatal(err)
	}
	gw, err := loom.New(loom.Config{
		Store:   tenancy.NewPostgresStore(direct),
		Routes:  []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Keyring: testKeyring(t, 1, 1),
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, SpoolDir: t.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	ten, err := gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := gw.Admin().CreateKey(ctx, ten.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(direct)
	defer db.Close()

	proxy.Cut()
	const n = 20
	ids := map[string]bool{}
	for i := range n {
		body := `{"model":"mock-1","stream":` + []string{"false", "true"}[i%2] + `,"messages":[{"role":"user","content":"hello"}]}`
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d during the outage: status %d", i, resp.StatusCode)
		}
		ids[resp.Header.Get("X-Request-Id")] = true
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = gw.ForceFlush(short)
	cancel()
	if err == nil {
		t.Fatal("ForceFlush succeeded with the store cut off")
	}
	if got, _ := countTraces(t, db); got != 0 {
		t.Fatalf("%d traces reached the store through a cut proxy", got)
	}

	proxy.Restore()
	flushCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := gw.ForceFlush(flushCtx); err != nil {
		t.Fatalf("flush after the outage: %v", err)
	}
	if got, distinct := countTraces(t, db); got != n || distinct != n {
		t.Fatalf("count(*) = %d, count(DISTINCT id) = %d; want %d", got, distinct, n)
	}
	for id := range readTraces(t, db) {
		if !ids[id] {
			t.Errorf("stored trace %s was never answered", id)
		}
	}
}

// TestShutdownUnderLoad: requests run while the server shuts down gracefully; every request
// answered 200 has its trace in the store, and every stream that started finished.
func TestShutdownUnderLoad(t *testing.T) {
	s := newSinkEnv(t, migrations.SQLite, []loom.Route{{Name: "mock",
		Provider: provider.NewMock(provider.MockConfig{ChunkDelay: 3 * time.Millisecond}), Models: []string{"mock-1"}}})
	base := s.srv.URL
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	var (
		mu       sync.Mutex
		answered []string // x-request-id of every 200
		closing  atomic.Bool
		lateOK   atomic.Int64 // 200s that finished after the shutdown began
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			streaming := g%2 == 1
			body := `{"model":"mock-1","stream":` + []string{"false", "true"}[g%2] + `,"messages":[{"role":"user","content":"count to ten please"}]}`
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+s.key)
				resp, err := client.Do(req)
				if err != nil {
					if !closing.Load() {
						t.Errorf("request before the shutdown: %v", err)
					}
					time.Sleep(time.Millisecond)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					continue
				}
				mu.Lock()
				answered = append(answered, resp.Header.Get("X-Request-Id"))
				mu.Unlock()
				if streaming && (err != nil || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n"))) {
					t.Errorf("a stream answered 200 was cut: err %v, body %q", err, b)
				}
				if closing.Load() {
					lateOK.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	closing.Store(true)
	s.stop(t) // httptest.Server.Close waits for the requests in flight, then Gateway.Shutdown
	close(stop)
	wg.Wait()

	rows := readTraces(t, s.db)
	if len(answered) == 0 {
		t.Fatal("no request was answered")
	}
	for _, id := range answered {
		if _, ok := rows[id]; !ok {
			t.Errorf("request %s was answered 200 but has no trace", id)
		}
	}
	t.Logf("%d answered, %d of them finished during the shutdown, %d traces", len(answered), lateOK.Load(), len(rows))
	if lateOK.Load() == 0 {
		t.Error("no request was in flight when the shutdown began; the test proves nothing")
	}
	if slices.Contains(answered, "") {
		t.Error("a 200 without x-request-id")
	}
}
