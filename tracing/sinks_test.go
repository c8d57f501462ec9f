package tracing

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
)

// sinkStore is one database under test: a sink writing to it, and a way to read its rows
// back and to run statements against it directly.
type sinkStore struct {
	sink Sink
	read func(t testing.TB) []*Trace // every stored trace, ordered by id
	exec func(ctx context.Context, query string) error
}

func TestPostgresSink(t *testing.T) {
	testSink(t, func(t *testing.T) sinkStore {
		pool := newSinkTestPostgres(t)
		sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return postgresSinkStore(sink, pool)
	})
}

func TestSQLiteSink(t *testing.T) {
	testSink(t, func(t *testing.T) sinkStore {
		db := newSinkTestSQLite(t)
		return sqliteSinkStore(NewSQLiteSink(db), db)
	})
}

// testSink is the behaviour every trace store shares.
func testSink(t *testing.T, newStore func(t *testing.T) sinkStore) {
	t.Run("round trip", func(t *testing.T) {
		st := newStore(t)
		batch := sinkTestTraces(40, time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC))
		if err := st.sink.WriteBatch(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sinkStored(batch), st.read(t)); diff != "" {
			t.Errorf("stored traces (-want +got):\n%s", diff)
		}
	})

	t.Run("each trace once", func(t *testing.T) {
		st := newStore(t)
		batch := sinkTestTraces(20, time.Now())
		// A trace twice in a batch stored before.
		if err := st.sink.WriteBatch(t.Context(), append(batch[:10:10], batch[5])); err != nil {
			t.Fatal(err)
		}
		if err := st.sink.WriteBatch(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		// Again, and once more with the traces doubled inside the batch and new ones mixed in.
		if err := st.sink.WriteBatch(t.Context(), batch); err != nil {
			t.Fatalf("second write: %v", err)
		}
		more := sinkTestTraces(5, time.Now())
		again := append(append(append([]*Trace{}, batch...), more...), batch[3], more[0])
		if err := st.sink.WriteBatch(t.Context(), again); err != nil {
			t.Fatalf("third write: %v", err)
		}
		want := sinkStored(append(append([]*Trace{}, batch...), more...))
		if diff := cmp.Diff(want, st.read(t)); diff != "" {
			t.Errorf("stored traces (-want +got):\n%s", diff)
		}
	})

	t.Run("immutable", func(t *testing.T) {
		st := newStore(t)
		batch := sinkTestTraces(3, time.Now())
		if err := st.sink.WriteBatch(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"UPDATE traces SET status = 1",
			"UPDATE traces SET request_sealed = NULL WHERE status = 200",
			"DELETE FROM traces",
			"DELETE FROM traces WHERE status = 200",
		} {
			err := st.exec(t.Context(), q)
			if err == nil || !strings.Contains(err.Error(), "traces are immutable") {
				t.Errorf("%s: error %v, want one saying traces are immutable", q, err)
			}
		}
		if diff := cmp.Diff(sinkStored(batch), st.read(t)); diff != "" {
			t.Errorf("stored traces changed (-want +got):\n%s", diff)
		}
	})

	t.Run("empty batch", func(t *testing.T) {
		st := newStore(t)
		if err := st.sink.WriteBatch(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("done context", func(t *testing.T) {
		st := newStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := st.sink.WriteBatch(ctx, sinkTestTraces(2, time.Now())); !errors.Is(err, context.Canceled) {
			t.Errorf("WriteBatch with a cancelled context: %v, want context.Canceled", err)
		}
		if got := st.read(t); len(got) != 0 {
			t.Errorf("stored %d traces, want none", len(got))
		}
	})

	t.Run("after shutdown", func(t *testing.T) {
		st := newStore(t)
		for range 2 { // idempotent
			if err := st.sink.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.sink.WriteBatch(t.Context(), sinkTestTraces(1, time.Now())); err == nil {
			t.Error("WriteBatch after Shutdown succeeded")
		}
	})
}

func TestPostgresSinkTruncateAndRetention(t *testing.T) {
	pool := newSinkTestPostgres(t)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	st := postgresSinkStore(sink, pool)
	feb := sinkTestTraces(3, time.Date(2026, 2, 20, 0, 0, 0, 0, time.UTC))
	mar := sinkTestTraces(4, now)
	if err := sink.WriteBatch(t.Context(), append(append([]*Trace{}, feb...), mar...)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"TRUNCATE traces", "TRUNCATE traces_y2026m02", "TRUNCATE traces_y2026m03"} {
		if err := st.exec(t.Context(), q); err == nil || !strings.Contains(err.Error(), "traces are immutable") {
			t.Errorf("%s: error %v, want one saying traces are immutable", q, err)
		}
	}
	// Retention: a whole month goes at once.
	if err := st.exec(t.Context(), "DROP TABLE traces_y2026m02"); err != nil {
		t.Fatalf("drop a month: %v", err)
	}
	if diff := cmp.Diff(sinkStored(mar), st.read(t)); diff != "" {
		t.Errorf("traces after dropping February (-want +got):\n%s", diff)
	}
	// A late replay of a February trace recreates the month rather than failing forever.
	if err := sink.WriteBatch(t.Context(), feb[:1]); err == nil {
		t.Log("replay into a dropped month succeeded at once")
	} else if err := sink.WriteBatch(t.Context(), feb[:1]); err != nil {
		t.Errorf("replay into a dropped month, second try: %v", err)
	}
	if got := len(st.read(t)); got != len(mar)+1 {
		t.Errorf("stored %d traces, want %d", got, len(mar)+1)
	}
}

func TestPostgresSinkPartitions(t *testing.T) {
	pool := newSinkTestPostgres(t)
	var mu sync.Mutex
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	partitions := func() []string {
		t.Helper()
		rows, err := pool.Query(t.Context(),
			"SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'traces'::regclass ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return names
	}
	if diff := cmp.Diff([]string{"traces_y2026m03", "traces_y2026m04", "traces_y2026m05"}, partitions()); diff != "" {
		t.Fatalf("partitions after NewPostgresSink (-want +got):\n%s", diff)
	}

	tokyo := time.FixedZone("JST", 9*3600)
	tests := []struct {
		name    string
		created time.Time
		want    string
	}{
		{"far past", time.Date(2003, 7, 15, 8, 0, 0, 0, time.UTC), "traces_y2003m07"},
		{"start of year 1", time.Time{}, "traces_y0001m01"},
		{"this month", now, "traces_y2026m03"},
		{"last microsecond of March", time.Date(2026, 3, 31, 23, 59, 59, 999999999, time.UTC), "traces_y2026m03"},
		{"first instant of April", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), "traces_y2026m04"},
		{"April in Tokyo, March in UTC", time.Date(2026, 4, 1, 8, 59, 0, 0, tokyo), "traces_y2026m03"},
		{"next year", time.Date(2027, 11, 2, 3, 4, 5, 0, time.UTC), "traces_y2027m11"},
	}
	var batch []*Trace
	for _, tt := range tests {
		tr := sinkTestTraces(1, tt.created)[0]
		tr.CreatedAt = tt.created
		batch = append(batch, tr)
	}
	if err := sink.WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if err := pool.QueryRow(t.Context(), "SELECT tableoid::regclass::text FROM traces WHERE id = $1", batch[i].ID).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("partition = %s, want %s", got, tt.want)
			}
		})
	}

	// Offered again with a trace of a new month: the batch takes the path that skips stored
	// traces, which must create the partition too.
	again := append(append([]*Trace{}, batch...), sinkTestTraces(1, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))...)
	if err := sink.WriteBatch(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sinkStored(again), postgresSinkStore(sink, pool).read(t)); diff != "" {
		t.Errorf("stored traces (-want +got):\n%s", diff)
	}

	// Late in May, the first batch creates June's partition ahead of June's traces.
	mu.Lock()
	now = time.Date(2026, 5, 30, 22, 0, 0, 0, time.UTC)
	mu.Unlock()
	if err := sink.WriteBatch(t.Context(), sinkTestTraces(1, clock())); err != nil {
		t.Fatal(err)
	}
	want := []string{"traces_y0001m01", "traces_y2003m07",
		"traces_y2026m03", "traces_y2026m04", "traces_y2026m05", "traces_y2026m06", "traces_y2027m11",
		"traces_y2030m01"}
	if diff := cmp.Diff(want, partitions()); diff != "" {
		t.Errorf("partitions late in May (-want +got):\n%s", diff)
	}
}

// Several replicas seeing a new month at once: partition creation must neither fail on a
// duplicate name nor deadlock with the inserts.
func TestPostgresSinkConcurrentNewMonths(t *testing.T) {
	pool := newSinkTestPostgres(t)
	var sinks []*PostgresSink
	for range 4 {
		s, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sinks = append(sinks, s)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var want []*Trace
	var wantMu sync.Mutex
	for i, s := range sinks {
		for j := range 4 {
			wg.Go(func() {
				var batch []*Trace
				// Every writer covers the same new months, in a different order.
				for k := range 6 {
					m := (k + i + j) % 6
					batch = append(batch, sinkTestTraces(3, time.Date(2010, time.Month(1+m), 5, 0, 0, 0, 0, time.UTC))...)
				}
				if err := s.WriteBatch(t.Context(), batch); err != nil {
					errs <- err
					return
				}
				wantMu.Lock()
				want = append(want, batch...)
				wantMu.Unlock()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, want := len(postgresSinkStore(nil, pool).read(t)), len(want); got != want {
		t.Errorf("stored %d traces, want %d", got, want)
	}
}

// A store that cannot be reached yields an error, at once or when ctx ends, and the sink
// works again when the store is back.
func TestPostgresSinkUnreachable(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		pool, err := pgxpool.New(t.Context(), "postgres://postgres@127.0.0.1:1/loom?sslmode=disable&connect_timeout=5")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := NewPostgresSink(ctx, pool, PostgresSinkOptions{}); err == nil {
			t.Error("NewPostgresSink on a dead address succeeded")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("NewPostgresSink took %v to fail", d)
		}
	})

	t.Run("outage", func(t *testing.T) {
		target := pgtest.New(t)
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		migrateSinkTestPostgres(t, target)
		proxy := newSinkTestProxy(t, u.Host)
		u.Host = proxy.addr()
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 1 // the one connection the outage breaks
		pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		first := sinkTestTraces(5, time.Now())
		if err := sink.WriteBatch(t.Context(), first); err != nil {
			t.Fatal(err)
		}

		// The network drops every connection, then swallows new ones without an answer.
		proxy.setDown(true)
		lost := sinkTestTraces(5, time.Now())
		for i := range 2 { // a broken pooled connection, then a connection attempt that hangs
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			start := time.Now()
			err := sink.WriteBatch(ctx, lost)
			cancel()
			if err == nil {
				t.Fatalf("attempt %d: WriteBatch during an outage succeeded", i)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("attempt %d: WriteBatch took %v to fail (ctx allowed 300ms)", i, d)
			}
			if IsPermanent(err) {
				t.Errorf("attempt %d: connection loss classified as permanent: %v", i, err)
			}
			t.Logf("attempt %d: %v", i, err)
		}

		proxy.setDown(false)
		if err := sink.WriteBatch(t.Context(), lost); err != nil {
			t.Fatalf("WriteBatch after the outage: %v", err)
		}
		want := sinkStored(append(append([]*Trace{}, first...), lost...))
		if diff := cmp.Diff(want, postgresSinkStore(sink, pool).read(t)); diff != "" {
			t.Errorf("stored traces (-want +got):\n%s", diff)
		}
	})
}

func TestPostgresSinkInvalidTrace(t *testing.T) {
	pool := newSinkTestPostgres(t)
	sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := sinkTestTraces(2, time.Now())
	bad[1].ID = "req-123"
	if err := sink.WriteBatch(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "not a UUID") {
		t.Errorf("WriteBatch with a bad id: %v, want an error naming it", err)
	}
	if got := postgresSinkStore(sink, pool).read(t); len(got) != 0 {
		t.Errorf("stored %d traces of a failed batch, want none", len(got))
	}
}

func BenchmarkPostgresSinkWriteBatch(b *testing.B) {
	pool := newSinkTestPostgres(b)
	sink, err := NewPostgresSink(b.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkSinkWriteBatch(b, sink)
}

// BenchmarkPostgresSinkWriteBatchReplay measures the slow path: batches of which half was
// stored before, as after a replay of the spool.
func BenchmarkPostgresSinkWriteBatchReplay(b *testing.B) {
	pool := newSinkTestPostgres(b)
	sink, err := NewPostgresSink(b.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		b.Fatal(err)
	}
	const batchSize = 512
	body := make([]byte, 1024)
	rand.Read(body)
	batch := make([]*Trace, batchSize)
	for i := range batch {
		batch[i] = sinkTestTraces(1, time.Now())[0]
		batch[i].SealedRequest = body
		batch[i].SealedResponse = body
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		b.StopTimer()
		now := time.Now()
		for _, t := range batch {
			t.ID = sinkTestID(now)
			t.CreatedAt = now
		}
		if err := sink.WriteBatch(b.Context(), batch[:batchSize/2]); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := sink.WriteBatch(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		n += batchSize
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "traces/s")
}

func BenchmarkSQLiteSinkWriteBatch(b *testing.B) {
	benchmarkSinkWriteBatch(b, NewSQLiteSink(newSinkTestSQLite(b)))
}

// benchmarkSinkWriteBatch writes batches of 512 fresh traces with 1 KiB sealed bodies.
func benchmarkSinkWriteBatch(b *testing.B, sink Sink) {
	const batchSize = 512
	body := make([]byte, 1024)
	rand.Read(body)
	batch := make([]*Trace, batchSize)
	for i := range batch {
		batch[i] = sinkTestTraces(1, time.Now())[0]
		batch[i].SealedRequest = body
		batch[i].SealedResponse = body
	}
	b.ReportAllocs()
	b.SetBytes(batchSize * 2 * int64(len(body)))
	n := 0
	for b.Loop() {
		now := time.Now()
		for _, t := range batch {
			t.ID = sinkTestID(now)
			t.CreatedAt = now
		}
		if err := sink.WriteBatch(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		n += batchSize
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "traces/s")
}

// newSinkTestPostgres returns a pool on a fresh, migrated database.
func newSinkTestPostgres(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	u := pgtest.New(tb)
	migrateSinkTestPostgres(tb, u)
	pool, err := pgxpool.New(tb.Context(), u)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func migrateSinkTestPostgres(tb testing.TB, url string) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	defer db.Close()
	if err := migrations.Up(tb.Context(), db, migrations.Postgres); err != nil {
		tb.Fatal(err)
	}
}

func newSinkTestSQLite(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sqlitedb.Open(tb.Context(), filepath.Join(tb.TempDir(), "loom.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := migrations.Up(tb.Context(), db, migrations.SQLite); err != nil {
		tb.Fatal(err)
	}
	return db
}

const sinkTestColumns = `id, created_at, tenant_id, api_key_id, request_id,
	model, served_model, provider, stream, status, error_type, client_aborted,
	prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_source,
	cost_micro_usd, price_version, latency_us, ttfb_us, overhead_us,
	response_truncated, request_sealed, response_sealed, key_version, fields_cut, finish_reasons`

// sinkTestScan returns the scan targets for sinkTestColumns; created receives created_at,
// finish finish_reasons.
func sinkTestScan(t *Trace, created any, usage *string, finish any) []any {
	return []any{&t.ID, created, &t.TenantID, &t.APIKeyID, &t.RequestID,
		&t.Model, &t.ServedModel, &t.Provider, &t.Stream, &t.Status, &t.ErrorType, &t.ClientAborted,
		&t.PromptTokens, &t.CompletionTokens, &t.CachedTokens, &t.ReasoningTokens, usage,
		&t.CostMicroUSD, &t.PriceVersion, &t.LatencyUS, &t.TTFBUS, &t.OverheadUS,
		&t.ResponseTruncated, &t.SealedRequest, &t.SealedResponse, &t.KeyVersion, &t.FieldsCut, finish}
}

func postgresSinkStore(sink *PostgresSink, pool *pgxpool.Pool) sinkStore {
	return sinkStore{
		sink: sink,
		read: func(tb testing.TB) []*Trace {
			tb.Helper()
			rows, err := pool.Query(tb.Context(), "SELECT "+sinkTestColumns+" FROM traces ORDER BY id")
			if err != nil {
				tb.Fatal(err)
			}
			defer rows.Close()
			var got []*Trace
			for rows.Next() {
				t := new(Trace)
				var usage string
				if err := rows.Scan(sinkTestScan(t, &t.CreatedAt, &usage, &t.FinishReasons)...); err != nil {
					tb.Fatal(err)
				}
				if t.FinishReasons == nil {
					tb.Fatal("finish_reasons read as NULL")
				}
				if len(t.FinishReasons) == 0 {
					t.FinishReasons = nil
				}
				t.CreatedAt = t.CreatedAt.UTC()
				t.UsageSource = UsageSource(usage)
				got = append(got, t)
			}
			if err := rows.Err(); err != nil {
				tb.Fatal(err)
			}
			return got
		},
		exec: func(ctx context.Context, query string) error {
			_, err := pool.Exec(ctx, query)
			return err
		},
	}
}

func sqliteSinkStore(sink *SQLiteSink, db *sql.DB) sinkStore {
	return sinkStore{
		sink: sink,
		read: func(tb testing.TB) []*Trace {
			tb.Helper()
			rows, err := db.QueryContext(tb.Context(), "SELECT "+sinkTestColumns+" FROM traces ORDER BY id")
			if err != nil {
				tb.Fatal(err)
			}
			defer rows.Close()
			var got []*Trace
			for rows.Next() {
				t := new(Trace)
				var created int64
				var usage, finish string
				if err := rows.Scan(sinkTestScan(t, &created, &usage, &finish)...); err != nil {
					tb.Fatal(err)
				}
				if err := json.Unmarshal([]byte(finish), &t.FinishReasons); err != nil || t.FinishReasons == nil {
					tb.Fatalf("finish_reasons %q: not a JSON array (%v)", finish, err)
				}
				if len(t.FinishReasons) == 0 {
					t.FinishReasons = nil
				}
				t.CreatedAt = time.UnixMicro(created).UTC()
				t.UsageSource = UsageSource(usage)
				got = append(got, t)
			}
			if err := rows.Err(); err != nil {
				tb.Fatal(err)
			}
			return got
		},
		exec: func(ctx context.Context, query string) error {
			_, err := db.ExecContext(ctx, query)
			return err
		},
	}
}

// sinkTestTraces returns n traces created around at, with every field set and varied:
// costs known and unknown, bodies present, empty and missing.
func sinkTestTraces(n int, at time.Time) []*Trace {
	sources := []UsageSource{UsageReported, UsageEstimated, UsageMissing}
	out := make([]*Trace, n)
	for i := range out {
		created := at.Add(time.Duration(i) * 1234567 * time.Nanosecond)
		t := &Trace{
			ID:                sinkTestID(created),
			CreatedAt:         created,
			TenantID:          fmt.Sprintf("tenant-%d", i%3),
			APIKeyID:          fmt.Sprintf("key-%d", i%5),
			RequestID:         []string{"", "req-Ω-" + fmt.Sprint(i)}[i%2],
			Model:             "openai/gpt-4o-mini",
			ServedModel:       "gpt-4o-mini-2024-07-18",
			Provider:          "openai",
			Stream:            i%2 == 0,
			Status:            []int{200, 200, 429, 504, 200}[i%5],
			ErrorType:         []string{"", "", "rate_limit_error", "timeout", ""}[i%5],
			ClientAborted:     i%7 == 3,
			PromptTokens:      int64(1000 + i),
			CompletionTokens:  int64(200 + i),
			CachedTokens:      int64(i * 10),
			ReasoningTokens:   int64(i),
			UsageSource:       sources[i%3],
			PriceVersion:      "2026-01",
			LatencyUS:         int64(1_500_000 + i),
			TTFBUS:            int64(300_000 + i),
			OverheadUS:        int64(250 + i),
			ResponseTruncated: i%4 == 1,
			KeyVersion:        1 + i%2,
			FieldsCut:         i%6 == 5,
			FinishReasons:     [][]string{nil, {"stop"}, {"length", "tool_calls"}, {`<b>"x"</b>\u2028`, "Ω"}, {"content_filter"}}[i%5],
		}
		if i%3 != 2 {
			c := int64(-5 + i*1_000_003) // any int64, even a negative correction
			t.CostMicroUSD = &c
		}
		switch i % 4 {
		case 0, 1:
			t.SealedRequest = make([]byte, 28+i*37)
			rand.Read(t.SealedRequest)
			t.SealedResponse = make([]byte, 28+i*101)
			rand.Read(t.SealedResponse)
		case 2:
			t.SealedRequest = []byte{0, 1, 2, 0xff}
			t.SealedResponse = []byte{} // stored as NULL
		case 3:
			// no bodies
		}
		out[i] = t
	}
	return out
}

// sinkStored returns what a store holds for traces: microsecond UTC times, no plaintext,
// an empty sealed body as none, ordered by id.
func sinkStored(traces []*Trace) []*Trace {
	out := make([]*Trace, len(traces))
	for i, t := range traces {
		c := *t
		c.CreatedAt = c.CreatedAt.Truncate(time.Microsecond).UTC()
		c.RequestBody, c.ResponseBody = nil, nil
		if len(c.SealedRequest) == 0 {
			c.SealedRequest = nil
		}
		if len(c.SealedResponse) == 0 {
			c.SealedResponse = nil
		}
		out[i] = &c
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].ID < out[j-1].ID; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// sinkTestID returns a UUIDv7 for at: 48 bits of Unix milliseconds, then random bits.
func sinkTestID(at time.Time) string {
	var u [16]byte
	rand.Read(u[:])
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(at.UnixMilli()))
	copy(u[:6], ms[2:])
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// sinkTestProxy forwards TCP connections to a server until it is set down: then it closes
// every connection and accepts new ones without ever answering (a dead network path).
type sinkTestProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func newSinkTestProxy(tb testing.TB, target string) *sinkTestProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &sinkTestProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.serve(c)
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
		p.closeAll()
	})
	return p
}

func (p *sinkTestProxy) addr() string { return p.ln.Addr().String() }

func (p *sinkTestProxy) serve(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = true
	if p.down {
		return // held open, never answered, until closeAll
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.conns[up] = true
	go func() { io.Copy(up, c); up.Close() }()
	go func() { io.Copy(c, up); c.Close() }()
}

func (p *sinkTestProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	p.closeAll()
}

func (p *sinkTestProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
