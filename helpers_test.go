package loom_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// env is a gateway over a real SQLite store, served on loopback, with one tenant and key.
type env struct {
	gw       *loom.Gateway
	srv      *httptest.Server
	store    tenancy.Store
	sink     *tracing.MemorySink
	keyring  *loomcrypto.Keyring
	tenantID string
	keyID    string
	key      string
}

func newEnv(t testing.TB, routes []loom.Route, modify ...func(*loom.Config)) *env {
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
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: tenancy.NewSQLiteStore(db), sink: tracing.NewMemorySink(), keyring: keyring}
	cfg := loom.Config{
		Store:   e.store,
		Keyring: keyring,
		Routes:  routes,
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{e.sink}},
	}
	for _, m := range modify {
		m(&cfg)
	}
	e.gw, err = loom.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ten, err := e.gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := e.gw.Admin().CreateKey(ctx, ten.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	e.tenantID, e.keyID, e.key = ten.ID, k.ID, raw
	e.srv = httptest.NewServer(e.gw)
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// client is the official OpenAI SDK pointed at the gateway.
func (e *env) client() *openai.Client {
	c := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(e.key), option.WithMaxRetries(0))
	return &c
}

// traces waits until the sink holds n traces (a handler records its trace just after the
// client got the last byte), bounded, and returns what reached it.
func (e *env) traces(t *testing.T, n int) []*tracing.Trace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if err := e.gw.ForceFlush(ctx); err != nil {
			t.Errorf("flush: %v", err)
		}
		if got := e.sink.Traces(); len(got) >= n || ctx.Err() != nil {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// open decrypts a trace's bodies.
func (e *env) open(t *testing.T, tr *tracing.Trace) (req, resp []byte) {
	t.Helper()
	if tr.RequestBody != nil || tr.ResponseBody != nil {
		t.Fatal("a sink received plaintext bodies")
	}
	var err error
	if req, err = e.keyring.Open(tr.TenantID, tracing.BodyRecordID(tr.ID, tracing.BodyRequest), tr.KeyVersion, tr.SealedRequest); err != nil {
		t.Fatalf("open request body: %v", err)
	}
	if resp, err = e.keyring.Open(tr.TenantID, tracing.BodyRecordID(tr.ID, tracing.BodyResponse), tr.KeyVersion, tr.SealedResponse); err != nil {
		t.Fatalf("open response body: %v", err)
	}
	return req, resp
}

// post sends a raw request to the gateway.
func (e *env) post(t *testing.T, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sseEvents splits an SSE body into its events (without the blank line).
func sseEvents(b []byte) [][]byte {
	var out [][]byte
	for _, ev := range bytes.Split(b, []byte("\n\n")) {
		if len(bytes.TrimSpace(ev)) > 0 {
			out = append(out, ev)
		}
	}
	return out
}

// upstreamCall is what a fake upstream received.
type upstreamCall struct {
	Path, Query string
	Header      http.Header
	Body        map[string]any
}

// fakeUpstream replays a recorded response: status and body byte for byte, SSE event by
// event with a flush after each, as the provider sent it. It records each call.
type fakeUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls []upstreamCall
}

func newFakeUpstream(t *testing.T, status int, body []byte) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		if bytes.HasPrefix(body, []byte("data:")) || bytes.HasPrefix(body, []byte("event:")) {
			w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
			w.WriteHeader(status)
			for _, ev := range sseEvents(body) {
				w.Write(append(ev, "\n\n"...))
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Ratelimit-Remaining-Requests", "4999")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeUpstream) record(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	f.mu.Lock()
	f.calls = append(f.calls, upstreamCall{Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: m})
	f.mu.Unlock()
}

func (f *fakeUpstream) lastCall(t *testing.T) upstreamCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		t.Fatal("the upstream received no request")
	}
	return f.calls[len(f.calls)-1]
}

// readEvents reads an SSE response body to its end.
func readEvents(t *testing.T, r io.Reader) [][]byte {
	t.Helper()
	var out [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 {
			out = append(out, append([]byte(nil), line...))
		}
	}
	return out
}

// errorBody is the OpenAI error JSON.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}
