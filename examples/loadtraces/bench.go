package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/tracing"
)

// query is one benchmarked request; path gives run i's URL.
type query struct {
	name string
	path func(i int) string
}

func runBench(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadtraces bench", flag.ContinueOnError)
	var (
		pgURL    = fs.String("postgres", "", "PostgreSQL URL of a filled database")
		litePath = fs.String("sqlite", "", "filled SQLite file")
		runs     = fs.Int("runs", 50, "runs of each query")
		seed     = fs.Uint64("seed", 1, "the seed the data was generated with (for the master key)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*pgURL == "") == (*litePath == "") {
		return errors.New("give one of -postgres and -sqlite")
	}
	pool, db, err := openDB(ctx, *pgURL, *litePath)
	if err != nil {
		return err
	}
	var store analytics.Store
	if pool != nil {
		defer pool.Close()
		store = analytics.NewPostgresStore(pool)
	} else {
		defer db.Close()
		store = analytics.NewSQLiteStore(db)
	}
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: masterKey(*seed)})
	if err != nil {
		return err
	}
	// What a gateway's folder does within a second: the deltas a load left are folded.
	fold := rollup.SQLiteFolder(db)
	if pool != nil {
		fold = rollup.PostgresFolder(pool)
	}
	if n, err := fold.All(ctx); err != nil {
		return err
	} else if n > 0 {
		fmt.Fprintf(out, "folded %d rollup deltas first\n", n)
	}
	tenant, total, newest, err := biggestTenant(ctx, pool, db)
	if err != nil {
		return err
	}
	h, err := analytics.NewHandler(analytics.HandlerConfig{
		Store:  store,
		Tenant: func(*http.Request) (string, error) { return tenant, nil },
		WriteError: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		},
		Open: func(tenantID, traceID, part string, keyVersion int, sealed []byte) ([]byte, error) {
			return keyring.Open(tenantID, tracing.BodyRecordID(traceID, part), keyVersion, sealed)
		},
	})
	if err != nil {
		return err
	}
	// The range ends at the newest trace, at second precision, as the dashboard asks.
	to := newest.Truncate(time.Second).Add(time.Second)
	rng := func(d time.Duration) string {
		return "from=" + to.Add(-d).Format(time.RFC3339) + "&to=" + to.Format(time.RFC3339)
	}
	// Traces to fetch by id and a deep cursor: spread over the data, from the list itself.
	sample, err := sampleTraces(ctx, store, tenant, to, *runs)
	if err != nil {
		return err
	}
	deep := analytics.Cursor{CreatedAt: sample[len(sample)/2].CreatedAt, ID: sample[len(sample)/2].ID}.Encode()
	fixed := func(p string) func(int) string { return func(int) string { return p } }
	queries := []query{
		{"summary 24h", fixed("/v1/analytics/summary?" + rng(24*time.Hour))},
		{"summary 30d", fixed("/v1/analytics/summary?" + rng(30*24*time.Hour))},
		{"timeseries 24h (15m buckets)", fixed("/v1/analytics/timeseries?" + rng(24*time.Hour) + "&bucket=900s")},
		{"timeseries 30d (6h buckets)", fixed("/v1/analytics/timeseries?" + rng(30*24*time.Hour) + "&bucket=21600s")},
		{"timeseries 24h by model", fixed("/v1/analytics/timeseries?" + rng(24*time.Hour) + "&bucket=900s&group_by=model")},
		{"list, first page", fixed("/v1/traces?limit=50")},
		{"list, deep page (cursor)", fixed("/v1/traces?limit=50&cursor=" + deep)},
		{"list, filtered by model", fixed("/v1/traces?limit=50&model=claude-sonnet-4")},
		{"list, filtered by model, deep", fixed("/v1/traces?limit=50&model=claude-sonnet-4&cursor=" + deep)},
		{"one trace by id", func(i int) string { return "/v1/traces/" + sample[i%len(sample)].ID }},
	}
	fmt.Fprintf(out, "tenant %s: %d of the store's traces, newest %s; %d runs each (after 2 warm-up runs)\n\n",
		tenant, total, newest.Format(time.RFC3339), *runs)
	fmt.Fprintf(out, "%-32s %10s %10s %10s\n", "query", "median", "p99", "bytes")
	for _, q := range queries {
		var times []time.Duration
		size := 0
		for i := -2; i < *runs; i++ {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, q.path(max(i, 0)), nil)
			rec := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(rec, req)
			el := time.Since(start)
			if rec.Code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", q.name, rec.Code, rec.Body.String())
			}
			if i >= 0 {
				times = append(times, el)
				size = rec.Body.Len()
			}
		}
		slices.Sort(times)
		fmt.Fprintf(out, "%-32s %10s %10s %10d\n", q.name, ms(times[(len(times)-1)/2]), ms(times[(len(times)*99+99)/100-1]), size)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// biggestTenant finds the tenant with the most traces (the generator's first), from the
// rollups, and the newest trace.
func biggestTenant(ctx context.Context, pool *pgxpool.Pool, db *sql.DB) (tenant string, total int64, newest time.Time, err error) {
	const q = "SELECT tenant_id, sum(requests) FROM trace_rollups WHERE grain_s = 21600 GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
	if pool != nil {
		if err = pool.QueryRow(ctx, q).Scan(&tenant, &total); err != nil {
			return
		}
		err = pool.QueryRow(ctx, "SELECT max(created_at) FROM traces").Scan(&newest)
		return tenant, total, newest.UTC(), err
	}
	if err = db.QueryRowContext(ctx, q).Scan(&tenant, &total); err != nil {
		return
	}
	var us int64
	err = db.QueryRowContext(ctx, "SELECT max(created_at) FROM traces").Scan(&us)
	return tenant, total, time.UnixMicro(us).UTC(), err
}

// sampleTraces picks n traces of the tenant spread over the last 30 days: the first of a
// page at n evenly spaced times.
func sampleTraces(ctx context.Context, store analytics.Store, tenant string, to time.Time, n int) ([]analytics.Trace, error) {
	var out []analytics.Trace
	for i := range n {
		at := to.Add(-time.Duration(i+1) * 30 * 24 * time.Hour / time.Duration(n+1))
		page, err := store.List(ctx, tenant, analytics.Filter{To: at}, nil, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
	}
	if len(out) == 0 {
		return nil, errors.New("no traces")
	}
	return out, nil
}
