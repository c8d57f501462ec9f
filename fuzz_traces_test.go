package loom_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

// fuzzGateway is one gateway whose traces go, in strict mode through a spool, into
// PostgreSQL and SQLite at once.
type fuzzGateway struct {
	srv      *httptest.Server
	gw       *loom.Gateway
	key      string
	spool    string
	pg, lite *sql.DB
}

func newFuzzGateway(tb testing.TB) *fuzzGateway {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	pg := stdlib.OpenDBFromPool(pool)
	tb.Cleanup(func() { pg.Close() })
	if err := migrations.Up(ctx, pg, migrations.Postgres); err != nil {
		tb.Fatal(err)
	}
	lite, err := sqlitedb.Open(ctx, filepath.Join(tb.TempDir(), "loom.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lite.Close() })
	if err := migrations.Up(ctx, lite, migrations.SQLite); err != nil {
		tb.Fatal(err)
	}
	pgSink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	f := &fuzzGateway{spool: filepath.Join(tb.TempDir(), "spool"), pg: pg, lite: lite}
	f.gw, err = loom.New(loom.Config{
		Store:   tenancy.NewSQLiteStore(lite),
		Keyring: testKeyring(tb, 1, 1),
		// Any "mock/…" model reaches the mock, which names it in its answer: hostile
		// text travels as requested and as served model.
		Routes: []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{})}},
		Tracing: tracing.PipelineConfig{
			Sinks:    []tracing.Sink{pgSink, tracing.NewSQLiteSink(lite)},
			SpoolDir: f.spool,
			Strict:   true, // an answer arrives only once its trace is spooled
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	ten, err := f.gw.Admin().CreateTenant(ctx, "fuzz")
	if err != nil {
		tb.Fatal(err)
	}
	if f.key, _, err = f.gw.Admin().CreateKey(ctx, ten.ID, "fuzz"); err != nil {
		tb.Fatal(err)
	}
	f.srv = httptest.NewServer(f.gw)
	tb.Cleanup(func() {
		f.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		f.gw.Shutdown(ctx)
	})
	return f
}

// rawJSONString quotes s for JSON but leaves bytes that are not valid UTF-8 as they are,
// so they reach the gateway unrepaired.
func rawJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteByte(s[i])
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	b.WriteByte('"')
	return b.String()
}

// headerValue keeps the bytes an HTTP client may send in a header (no control bytes).
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\xff"))
}

// send posts one chat request and returns its status and trace id.
func (f *fuzzGateway) send(t *testing.T, model, requestID, content string, stream bool) (int, string) {
	body := fmt.Sprintf(`{"model":%s,"stream":%v,"messages":[{"role":"user","content":%s}]}`,
		rawJSONString(model), stream, rawJSONString(content))
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	defer resp.Body.Close()
	readEvents(t, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Request-Id")
}

// kept reports whether trace id is stored in both databases or set aside in the
// dead-letter file.
func (f *fuzzGateway) kept(t *testing.T, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.gw.ForceFlush(ctx); err != nil {
		t.Fatalf("flush: %v (stats %+v)", err, f.gw.TraceStats())
	}
	stored := 0
	for _, db := range []*sql.DB{f.pg, f.lite} {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM traces WHERE CAST(id AS TEXT) = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		stored += n
	}
	if stored == 2 {
		return true
	}
	dead, err := tracing.ReadDeadLetter(f.spool)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead {
		if d.Trace.ID == id {
			return true
		}
	}
	return false
}

// FuzzHandlerTraces sends requests with arbitrary bytes in every field a client controls
// (model, X-Request-Id, message content, stream) through the real handler into
// PostgreSQL and SQLite: every answered request's trace is stored or in the dead-letter
// file, and a normal request sent after it is stored, so no input stops the traces.
func FuzzHandlerTraces(f *testing.F) {
	for _, seed := range []struct {
		model, requestID, content string
		stream                    bool
	}{
		{"mock/mock-1", "", "hello", false},
		{"mock/gpt-4o-mini\x00x", "\xff\xfe", "nul \x00 inside", true},
		{"mock/" + strings.Repeat("m", 5000), strings.Repeat("r", 3000), "long", false},
		{"<img src=x onerror=alert(1)></script>", "<b>id</b>", "\xc3\x28 invalid", true},
		{"", "", "", false},
		{"mock/\u2028\ufeff\U0001F600", "é", "\"quoted\\\"", false},
	} {
		f.Add(seed.model, seed.requestID, seed.content, seed.stream)
	}
	g := newFuzzGateway(f)
	f.Fuzz(func(t *testing.T, model, requestID, content string, stream bool) {
		status, id := g.send(t, model, headerValue(requestID), content, stream)
		if id == "" {
			t.Fatalf("status %d without a trace id", status)
		}
		if !g.kept(t, id) {
			t.Fatalf("the trace of a %d answer (model %q) was neither stored nor set aside; stats %+v", status, model, g.gw.TraceStats())
		}
		if status, id := g.send(t, "mock/mock-1", "", "after", false); status != http.StatusOK || !g.kept(t, id) {
			t.Fatalf("a normal request after it: status %d, trace kept %v", status, id != "" && g.kept(t, id))
		}
	})
}
