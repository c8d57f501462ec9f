package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loom-gateway/loom/rollup"
)

// runRollups is `rollups rebuild [-from T] [-to T]`: it recomputes the trace rollups (see
// package rollup) from the traces, for DATABASE_URL or the SQLite store in the data
// directory. It may run beside a serving gateway: each day rebuilt holds the sinks' rollup
// writes back while it runs.
func runRollups(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] != "rebuild" {
		return usageError{errors.New("want: rollups rebuild [-from RFC3339] [-to RFC3339]")}
	}
	fs := newFlagSet("rollups rebuild")
	dataDir := fs.String("data", or(io.getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory of the SQLite store (LOOM_DATA_DIR); unused with DATABASE_URL")
	fromS := fs.String("from", "", "first day to rebuild (RFC 3339; widened to the UTC day); default: the oldest trace")
	toS := fs.String("to", "", "end of the range (RFC 3339; widened to the UTC day); default: the newest trace")
	if err := parseFlags(fs, args[1:], io.stdout, "rebuild [flags]",
		"Recompute the trace rollups of whole UTC days from the traces, for DATABASE_URL or the SQLite store."); err != nil {
		return err
	}
	var from, to time.Time
	for _, x := range []struct {
		s   string
		dst *time.Time
	}{{*fromS, &from}, {*toS, &to}} {
		if x.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, x.s)
		if err != nil {
			return usageError{fmt.Errorf("-from and -to take RFC 3339 times such as 2026-01-02T00:00:00Z: %q", x.s)}
		}
		*x.dst = t
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return usageError{errors.New("-to is before -from")}
	}
	start := time.Now()
	var (
		st  rollup.RebuildStats
		err error
	)
	store, err := openExistingStore(ctx, io.getenv("DATABASE_URL"), *dataDir)
	if err != nil {
		return err
	}
	defer store.close()
	if store.pool != nil {
		st, err = rollup.RebuildPostgres(ctx, store.pool, from, to)
	} else {
		st, err = rollup.RebuildSQLite(ctx, store.db, from, to)
	}
	if err != nil {
		return err
	}
	if st.From.IsZero() {
		fmt.Fprintln(io.stdout, "no traces: nothing to rebuild")
		return nil
	}
	fmt.Fprintf(io.stdout, "rebuilt the rollups of %s to %s: %d traces, %d rows, in %v\n",
		st.From.Format(time.DateOnly), st.To.Format(time.DateOnly), st.Traces, st.Rows, time.Since(start).Round(time.Millisecond))
	return nil
}
