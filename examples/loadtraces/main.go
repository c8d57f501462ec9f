// Command loadtraces fills a Loom trace store with realistic generated traces, through the
// real sinks (PostgreSQL's COPY sink or the SQLite sink, each with the rollup step), and
// benchmarks the analytics API on them.
//
//	go run ./examples/loadtraces -postgres postgres://postgres@127.0.0.1:5432/loombench -n 10000000 -tenants 20
//	go run ./examples/loadtraces -sqlite /tmp/loombench.db -n 1000000 -tenants 20
//	go run ./examples/loadtraces bench -postgres postgres://… -runs 50
//
// The traces spread evenly over the last -days days (in time order, as a gateway writes
// them); the first tenant carries -big of them, the others share the rest. Each has a
// request and a response body sealed with a master key derived from -seed (a benchmark's
// key, never a real one), so the bench can open them as GET /v1/traces/{id} does.
//
// bench runs each query -runs times through the analytics API handler (in process: the
// SQL, the scan and the JSON encoding, no network) for the biggest tenant, with the range
// ending at the newest trace, and prints the median and the 99th percentile.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadtraces:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "bench" {
		return runBench(ctx, args[1:], out)
	}
	fs := flag.NewFlagSet("loadtraces", flag.ContinueOnError)
	var (
		pgURL    = fs.String("postgres", "", "PostgreSQL URL of the database to fill (migrated here)")
		litePath = fs.String("sqlite", "", "SQLite file to fill (created and migrated here)")
		n        = fs.Int64("n", 1_000_000, "number of traces")
		tenants  = fs.Int("tenants", 20, "number of tenants")
		big      = fs.Float64("big", 0.5, "share of the traces that belong to the first tenant")
		days     = fs.Int("days", 30, "the traces spread over the last this many days")
		batch    = fs.Int("batch", 1000, "traces per WriteBatch")
		workers  = fs.Int("workers", 2, "concurrent generators and (PostgreSQL) writers")
		seed     = fs.Uint64("seed", 1, "random seed (also derives the master key)")
		noRollup = fs.Bool("no-rollups", false, "write without the rollup step (then run `examples/server rollups rebuild`)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*pgURL == "") == (*litePath == "") {
		return errors.New("give one of -postgres and -sqlite")
	}
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: masterKey(*seed)})
	if err != nil {
		return err
	}
	sink, fold, closeDB, err := openSink(ctx, *pgURL, *litePath, !*noRollup)
	if err != nil {
		return err
	}
	defer closeDB()
	stopFolder := func() {}
	if fold != nil {
		// The server's folder, as it runs beside the sink.
		stopFolder = fold.Start(time.Second, func(err error) { fmt.Fprintln(out, err) })
	}
	defer stopFolder()
	end := time.Now().UTC()
	span := time.Duration(*days) * 24 * time.Hour
	g := newGenerator(*seed, *tenants, *big, end.Add(-span), span, *n, keyring)
	start := time.Now()
	writers := *workers
	if *litePath != "" {
		writers = 1 // SQLite has one writer at a time: more would only wait on its lock
	}
	written, err := load(ctx, g, sink, *batch, *workers, writers, *seed, func(done int64) {
		el := time.Since(start)
		fmt.Fprintf(out, "%d traces in %v (%.0f/s)\n", done, el.Round(time.Second), float64(done)/el.Seconds())
	})
	el := time.Since(start)
	fmt.Fprintf(out, "wrote %d traces in %v: %.0f traces/s; first tenant %s\n", written, el.Round(time.Millisecond),
		float64(written)/el.Seconds(), g.tenants[0])
	if err == nil && fold != nil {
		stopFolder() // a fold it had begun rolls back: All takes its deltas
		n, ferr := fold.All(ctx)
		fmt.Fprintf(out, "folded the last %d rollup deltas in %v\n", n, (time.Since(start) - el).Round(time.Millisecond))
		err = ferr
	}
	return err
}

// openSink opens the store, applies the migrations and returns its sink, with its rollup
// folder when rollups.
func openSink(ctx context.Context, pgURL, litePath string, rollups bool) (tracing.Sink, rollup.Folder, func(), error) {
	if pgURL != "" {
		pool, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			return nil, nil, nil, err
		}
		db := stdlib.OpenDBFromPool(pool)
		closeAll := func() { db.Close(); pool.Close() }
		if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		var (
			steps []tracing.PostgresTxStep
			fold  rollup.Folder
		)
		if rollups {
			steps = append(steps, rollup.Postgres)
			fold = rollup.PostgresFolder(pool)
		}
		sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: steps})
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		return sink, fold, closeAll, nil
	}
	db, err := sqlitedb.Open(ctx, litePath)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	var (
		steps []tracing.SQLiteTxStep
		fold  rollup.Folder
	)
	if rollups {
		steps = append(steps, rollup.SQLite)
		fold = rollup.SQLiteFolder(db)
	}
	return tracing.NewSQLiteSink(db, steps...), fold, func() { db.Close() }, nil
}

// openDB opens the store for reading.
func openDB(ctx context.Context, pgURL, litePath string) (*pgxpool.Pool, *sql.DB, error) {
	if pgURL != "" {
		pool, err := pgxpool.New(ctx, pgURL)
		return pool, nil, err
	}
	db, err := sqlitedb.Open(ctx, litePath)
	return nil, db, err
}
