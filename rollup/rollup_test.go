package rollup_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

// store is one database with a sink whose batches run the rollup step, then fail (the
// crash) when fail is set.
type store struct {
	sink       tracing.Sink
	fail       *bool
	fold       rollup.Folder
	rows       func(t *testing.T) []storedRow   // every rollup row after folding every delta, in key order
	deltas     func(t *testing.T) int           // how many deltas are not folded
	exec       func(t *testing.T, query string) // runs a statement
	traces     func(t *testing.T) int           // how many traces are stored
	maxAppends func(t *testing.T) int           // the most appends any row has had since compaction
	rebuild    func(ctx context.Context, from, to time.Time) (rollup.RebuildStats, error)
	// deleteTenant runs the tenant delete step in a transaction of its own.
	deleteTenant func(ctx context.Context, tenantID string) error
}

var errCrash = errors.New("the batch dies after the rollup step")

var stores = []struct {
	name string
	open func(t *testing.T) store
}{
	{"postgres", func(t *testing.T) store {
		ctx := t.Context()
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
		fail := new(bool)
		sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{
			rollup.Postgres,
			func(context.Context, pgx.Tx, []*tracing.Trace) error { return crash(*fail) },
		}})
		if err != nil {
			t.Fatal(err)
		}
		fold := rollup.PostgresFolder(pool)
		return store{sink: sink, fail: fail, fold: fold, rows: func(t *testing.T) []storedRow { return readRows(t, fold, db, true) },
			deltas: func(t *testing.T) int { return count(t, db, "SELECT count(*) FROM trace_rollup_deltas") },
			exec:   func(t *testing.T, q string) { execSQL(t, db, q) },
			traces: func(t *testing.T) int { return count(t, db, "SELECT count(*) FROM traces") },
			maxAppends: func(t *testing.T) int {
				return count(t, db, "SELECT max(a) FROM (SELECT max(appends) AS a FROM trace_rollups UNION ALL SELECT max(appends) FROM trace_rollup_totals) AS m")
			},
			rebuild: func(ctx context.Context, from, to time.Time) (rollup.RebuildStats, error) {
				return rollup.RebuildPostgres(ctx, pool, from, to)
			},
			deleteTenant: func(ctx context.Context, id string) error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return rollup.DeleteTenantPostgres(ctx, tx, id) })
			}}
	}},
	{"sqlite", func(t *testing.T) store {
		ctx := t.Context()
		db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		fail := new(bool)
		sink := tracing.NewSQLiteSink(db, rollup.SQLite, func(context.Context, *sql.Tx, []*tracing.Trace) error { return crash(*fail) })
		fold := rollup.SQLiteFolder(db)
		return store{sink: sink, fail: fail, fold: fold, rows: func(t *testing.T) []storedRow { return readRows(t, fold, db, false) },
			deltas: func(t *testing.T) int { return count(t, db, "SELECT count(*) FROM trace_rollup_deltas") },
			exec:   func(t *testing.T, q string) { execSQL(t, db, q) },
			traces: func(t *testing.T) int { return count(t, db, "SELECT count(*) FROM traces") },
			maxAppends: func(t *testing.T) int {
				return count(t, db, "SELECT max(a) FROM (SELECT max(appends) AS a FROM trace_rollups UNION ALL SELECT max(appends) FROM trace_rollup_totals) AS m")
			},
			rebuild: func(ctx context.Context, from, to time.Time) (rollup.RebuildStats, error) {
				return rollup.RebuildSQLite(ctx, db, from, to)
			},
			deleteTenant: func(ctx context.Context, id string) error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer tx.Rollback()
				if err := rollup.DeleteTenantSQLite(ctx, tx, id); err != nil {
					return err
				}
				return tx.Commit()
			}}
	}},
}

func crash(fail bool) error {
	if fail {
		return errCrash
	}
	return nil
}

// storedRow is a rollup row as stored, its histograms decoded and re-encoded (so two
// rows with equal counts compare equal however their appends were split).
type storedRow struct {
	Total                        bool // a row of trace_rollup_totals
	Tenant, Provider, Model, Key string
	Grain                        int64
	Start                        time.Time
	Class                        int
	Sums                         [11]int64
	Latency, TTFB, Overhead      string
	LatencyN, TTFBN, OverheadN   int64
}

func readRows(t *testing.T, fold rollup.Folder, db *sql.DB, pg bool) []storedRow {
	t.Helper()
	if _, err := fold.All(t.Context()); err != nil {
		t.Fatal(err)
	}
	var out []storedRow
	for _, total := range []bool{false, true} {
		out = append(out, readTable(t, db, pg, total)...)
	}
	sortRows(out)
	return out
}

func readTable(t *testing.T, db *sql.DB, pg, total bool) []storedRow {
	cols, table := "provider, model, api_key_id", "trace_rollups"
	if total {
		cols, table = "'', '', ''", "trace_rollup_totals"
	}
	r, err := db.QueryContext(t.Context(), `SELECT tenant_id, grain_s, bucket_start, `+cols+`, status_class,
		requests, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_micro_usd, unpriced,
		latency_us, ttfb_us, ttfb_count, overhead_us, latency_hist, ttfb_hist, overhead_hist FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []storedRow
	for r.Next() {
		var (
			s     storedRow
			start any
			at    time.Time
			us    int64
			h     [3][]byte
		)
		s.Total = total
		start = &us
		if pg {
			start = &at
		}
		dest := []any{&s.Tenant, &s.Grain, start, &s.Provider, &s.Model, &s.Key, &s.Class}
		for i := range s.Sums {
			dest = append(dest, &s.Sums[i])
		}
		if err := r.Scan(append(dest, &h[0], &h[1], &h[2])...); err != nil {
			t.Fatal(err)
		}
		if pg {
			s.Start = at.UTC()
		} else {
			s.Start = time.UnixMicro(us).UTC()
		}
		for i, dst := range []*string{&s.Latency, &s.TTFB, &s.Overhead} {
			var hist rollup.Hist
			if err := hist.Decode(h[i]); err != nil {
				t.Fatal(err)
			}
			*dst = fmt.Sprintf("%x", hist.Encode())
			*[]*int64{&s.LatencyN, &s.TTFBN, &s.OverheadN}[i] = hist.Count()
		}
		out = append(out, s)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortRows(rows []storedRow) {
	slices.SortFunc(rows, func(a, b storedRow) int {
		return cmpOr(fmt.Sprint(a.Total, a.Tenant, a.Grain, a.Start.UnixMicro(), a.Provider, a.Model, a.Key, a.Class),
			fmt.Sprint(b.Total, b.Tenant, b.Grain, b.Start.UnixMicro(), b.Provider, b.Model, b.Key, b.Class))
	})
}

func cmpOr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// expected is what the rows must be for these traces, computed here without the package's
// aggregation: by hand from each trace.
func expected(traces []*tracing.Trace) []storedRow {
	type key struct {
		total                           bool
		tenant, provider, model, apiKey string
		grain                           int64
		start                           int64
		class                           int
	}
	type acc struct {
		sums           [11]int64
		lat, ttfb, ovh rollup.Hist
	}
	m := map[key]*acc{}
	for _, tr := range traces {
		for _, g := range []int64{60, 900, 3600, 21600} {
			us := tr.CreatedAt.UnixMicro()
			k := key{false, tr.TenantID, tr.Provider, tr.Model, tr.APIKeyID, g, us - us%(g*1e6), tr.Status / 100}
			for _, k := range []key{k, {true, tr.TenantID, "", "", "", g, k.start, k.class}} {
				a := m[k]
				if a == nil {
					a = &acc{}
					m[k] = a
				}
				cost, unpriced := int64(0), int64(1)
				if tr.CostMicroUSD != nil {
					cost, unpriced = *tr.CostMicroUSD, 0
				}
				var ttfbN int64
				if tr.TTFBUS > 0 {
					ttfbN = 1
					a.ttfb.Add(tr.TTFBUS)
				}
				add := [11]int64{1, tr.PromptTokens, tr.CompletionTokens, tr.CachedTokens, tr.ReasoningTokens, cost, unpriced,
					tr.LatencyUS, tr.TTFBUS * ttfbN, ttfbN, tr.OverheadUS}
				for i := range add {
					a.sums[i] += add[i]
				}
				a.lat.Add(tr.LatencyUS)
				a.ovh.Add(tr.OverheadUS)
			}
		}
	}
	var out []storedRow
	for k, a := range m {
		out = append(out, storedRow{Total: k.total, Tenant: k.tenant, Provider: k.provider, Model: k.model, Key: k.apiKey, Grain: k.grain,
			Start: time.UnixMicro(k.start).UTC(), Class: k.class, Sums: a.sums,
			Latency: fmt.Sprintf("%x", a.lat.Encode()), TTFB: fmt.Sprintf("%x", a.ttfb.Encode()), Overhead: fmt.Sprintf("%x", a.ovh.Encode()),
			LatencyN: a.lat.Count(), TTFBN: a.ttfb.Count(), OverheadN: a.ovh.Count()})
	}
	sortRows(out)
	return out
}

func execSQL(t *testing.T, db *sql.DB, query string) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), query); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, db *sql.DB, query string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// traffic is mixed traffic over three days: tenants, providers, models, keys, statuses,
// unpriced requests, requests without a first byte, microsecond timestamps on minute, hour
// and day boundaries.
func traffic(r *rand.Rand, n int, base time.Time) []*tracing.Trace {
	out := make([]*tracing.Trace, n)
	for i := range out {
		at := base.Add(time.Duration(r.Int64N(int64(72 * time.Hour)))).Truncate(time.Microsecond)
		if i%10 == 0 {
			at = base.Add(time.Duration(r.IntN(72)) * time.Hour) // exactly on an hour (and a day) boundary
		}
		if i%10 == 1 {
			at = base.Add(time.Duration(r.IntN(72*60))*time.Minute - time.Microsecond) // just before a minute
		}
		tr := &tracing.Trace{
			ID: uuid.Must(uuid.NewV7()).String(), CreatedAt: at,
			TenantID: []string{"t-a", "t-b", "t-c"}[r.IntN(3)], APIKeyID: []string{"k1", "k2", "k3", "k4"}[r.IntN(4)],
			Provider: []string{"openai", "anthropic"}[r.IntN(2)], Model: []string{"gpt-4o", "claude", "<b>x</b>"}[r.IntN(3)],
			Status: []int{200, 200, 200, 200, 429, 500, 499, 0}[r.IntN(8)], UsageSource: tracing.UsageReported,
			PromptTokens: r.Int64N(5000), CompletionTokens: r.Int64N(2000), CachedTokens: r.Int64N(100), ReasoningTokens: r.Int64N(50),
			LatencyUS: r.Int64N(20_000_000), OverheadUS: r.Int64N(3000),
		}
		if r.IntN(3) > 0 {
			tr.TTFBUS = r.Int64N(tr.LatencyUS + 1)
		}
		if r.IntN(5) > 0 {
			c := r.Int64N(100000)
			tr.CostMicroUSD = &c
		}
		out[i] = tr
	}
	return out
}

// TestRollupsLiveRebuilt: after mixed traffic written in many batches (with retries that
// offer stored traces again, and batches that fail after the rollup step), the live rollups
// are exactly the aggregates of the stored traces, and a rebuild from the traces produces
// the same rows.
func TestRollupsLiveRebuilt(t *testing.T) {
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := tc.open(t)
			r := rand.New(rand.NewPCG(7, 8))
			base := time.Date(2026, 3, 30, 0, 0, 0, 0, time.UTC) // crosses a month
			all := traffic(r, 3000, base)
			// One hot key, its rows updated by 50 batches: past the compaction point three times.
			for _, tr := range all[:50] {
				tr.TenantID, tr.Provider, tr.Model, tr.APIKeyID, tr.Status = "t-a", "openai", "gpt-4o", "k1", 200
				tr.CreatedAt = base.Add(time.Duration(r.IntN(59)) * time.Second)
			}
			var prev []*tracing.Trace
			for i := 0; i < len(all); {
				n := 1 + r.IntN(60)
				if i < 50 {
					n = 1
				}
				batch := all[i:min(i+n, len(all))]
				i += len(batch)
				if r.IntN(4) == 0 {
					// A retry after a lost commit reply: stored traces come again with new ones.
					batch = append(append([]*tracing.Trace{}, prev...), batch...)
				}
				if r.IntN(6) == 0 {
					*s.fail = true
					if err := s.sink.WriteBatch(ctx, batch); !errors.Is(err, errCrash) {
						t.Fatalf("crashing batch: %v", err)
					}
					*s.fail = false
				}
				if err := s.sink.WriteBatch(ctx, batch); err != nil {
					t.Fatal(err)
				}
				prev = batch
				if r.IntN(3) == 0 {
					// A partial fold: some deltas move to the rollup tables, the rest wait.
					if _, err := s.fold(ctx, 1+r.IntN(40)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := s.traces(t); got != len(all) {
				t.Fatalf("%d traces stored, want %d", got, len(all))
			}
			want := expected(all)
			live := s.rows(t)
			if maxAppends := s.maxAppends(t); maxAppends >= 16 {
				t.Errorf("a row was appended to %d times without compaction", maxAppends)
			}
			if diff := cmp.Diff(want, live); diff != "" {
				t.Fatalf("live rollups (-want +got):\n%s", diff)
			}
			// Deltas not yet folded when the rebuild runs are dropped with the rows they
			// would add to: the rebuild counts their traces.
			extra := traffic(r, 200, base)
			if err := s.sink.WriteBatch(ctx, extra); err != nil {
				t.Fatal(err)
			}
			if s.deltas(t) == 0 {
				t.Fatal("the batch left no deltas")
			}
			all = append(all, extra...)
			st, err := s.rebuild(ctx, time.Time{}, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			want = expected(all)
			if st.Traces != int64(len(all)) || st.Rows != int64(len(want)) || !st.From.Equal(base) || !st.To.Equal(base.Add(72*time.Hour)) {
				t.Errorf("rebuild stats %+v, want %d traces, %d rows over [%v, %v)", st, len(all), len(want), base, base.Add(72*time.Hour))
			}
			if n := s.deltas(t); n != 0 {
				t.Errorf("%d deltas left after the rebuild", n)
			}
			live = s.rows(t)
			if diff := cmp.Diff(want, live); diff != "" {
				t.Errorf("rebuilt rollups (-want +rebuilt):\n%s", diff)
			}
			// A rebuild of one day leaves the others alone and that day equal, also with
			// deltas pending that reach over all three days: their rows of the other days
			// are folded, not lost.
			more := traffic(r, 200, base)
			if err := s.sink.WriteBatch(ctx, more); err != nil {
				t.Fatal(err)
			}
			if _, err := s.rebuild(ctx, base.Add(30*time.Hour), base.Add(31*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(expected(append(all, more...)), s.rows(t)); diff != "" {
				t.Errorf("rollups after rebuilding one day (-want +rebuilt):\n%s", diff)
			}
		})
	}
}

// TestRollupsCrash: a batch whose transaction fails after the rollup step leaves neither
// its traces nor its counts; retried, it is counted once.
func TestRollupsCrash(t *testing.T) {
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := tc.open(t)
			r := rand.New(rand.NewPCG(9, 10))
			first := traffic(r, 50, time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
			if err := s.sink.WriteBatch(ctx, first); err != nil {
				t.Fatal(err)
			}
			before := s.rows(t)
			second := traffic(r, 80, time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
			*s.fail = true
			for range 3 {
				if err := s.sink.WriteBatch(ctx, append(append([]*tracing.Trace{}, first[:10]...), second...)); !errors.Is(err, errCrash) {
					t.Fatalf("WriteBatch: %v, want the crash", err)
				}
			}
			if got := s.traces(t); got != len(first) {
				t.Errorf("%d traces after failed batches, want %d", got, len(first))
			}
			if n := s.deltas(t); n != 0 {
				t.Errorf("%d deltas after failed batches, want none", n)
			}
			if diff := cmp.Diff(before, s.rows(t)); diff != "" {
				t.Errorf("rollups after failed batches (-before +after):\n%s", diff)
			}
			*s.fail = false
			if err := s.sink.WriteBatch(ctx, append(append([]*tracing.Trace{}, first[:10]...), second...)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(expected(append(first, second...)), s.rows(t)); diff != "" {
				t.Errorf("rollups after the retry (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRollupsConcurrentFolds: batches written by four writers while two folders fold
// concurrently are counted exactly once, and the folders do not deadlock.
func TestRollupsConcurrentFolds(t *testing.T) {
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := tc.open(t)
			all := traffic(rand.New(rand.NewPCG(15, 16)), 4000, time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC))
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for w := range 4 {
				wg.Go(func() {
					for i := w * 20; i < len(all); i += 80 {
						if err := s.sink.WriteBatch(ctx, all[i:min(i+20, len(all))]); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			done := make(chan struct{})
			var folders sync.WaitGroup
			folded := make([]int, 2)
			for f := range folded {
				folders.Go(func() {
					for {
						n, err := s.fold(ctx, 37)
						if err != nil {
							errs <- err
							return
						}
						folded[f] += n
						select {
						case <-done:
							return
						default:
						}
					}
				})
			}
			wg.Wait()
			close(done)
			folders.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if folded[0] == 0 || folded[1] == 0 {
				t.Logf("folded %v deltas while writing", folded)
			}
			if diff := cmp.Diff(expected(all), s.rows(t)); diff != "" {
				t.Errorf("rollups (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRollupsMalformedDelta: a delta that does not decode stops the folder with an error
// that says what to rebuild, and a rebuild of one of its days drops it and counts again
// every day it covered.
func TestRollupsMalformedDelta(t *testing.T) {
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := tc.open(t)
			base := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
			all := traffic(rand.New(rand.NewPCG(17, 18)), 400, base) // three days, one delta per tenant
			if err := s.sink.WriteBatch(ctx, all); err != nil {
				t.Fatal(err)
			}
			s.exec(t, "UPDATE trace_rollup_deltas SET rows = substr(rows, 1, 10) WHERE tenant_id = 't-a'")
			if _, err := s.fold.All(ctx); err == nil || !strings.Contains(err.Error(), "rebuild") {
				t.Fatalf("fold of a malformed delta: %v, want an error naming the rebuild", err)
			}
			st, err := s.rebuild(ctx, base.Add(30*time.Hour), base.Add(31*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if !st.From.Equal(base) || !st.To.Equal(base.Add(72*time.Hour)) {
				t.Errorf("rebuilt [%v, %v), want the malformed delta's three days", st.From, st.To)
			}
			if diff := cmp.Diff(expected(all), s.rows(t)); diff != "" {
				t.Errorf("rollups after the rebuild (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRollupsDeleteTenant: a tenant's hard delete takes its rollup rows, and only its.
func TestRollupsDeleteTenant(t *testing.T) {
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			all := traffic(rand.New(rand.NewPCG(13, 14)), 300, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
			// Half folded, half still deltas: the delete takes both.
			if err := s.sink.WriteBatch(t.Context(), all[:150]); err != nil {
				t.Fatal(err)
			}
			if _, err := s.fold.All(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := s.sink.WriteBatch(t.Context(), all[150:]); err != nil {
				t.Fatal(err)
			}
			if err := s.deleteTenant(t.Context(), "t-b"); err != nil {
				t.Fatal(err)
			}
			var rest []*tracing.Trace
			for _, tr := range all {
				if tr.TenantID != "t-b" {
					rest = append(rest, tr)
				}
			}
			if len(rest) == len(all) || len(rest) == 0 {
				t.Fatal("the traffic lacks tenant t-b or others")
			}
			if diff := cmp.Diff(expected(rest), s.rows(t)); diff != "" {
				t.Errorf("rollups after deleting t-b (-want +got):\n%s", diff)
			}
		})
	}
}
