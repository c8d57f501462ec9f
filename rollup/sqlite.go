package rollup

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/loom-gateway/loom/tracing"
)

var _ tracing.SQLiteTxStep = SQLite

// sqliteUpsert adds one row; SQLite's || makes text of blobs, so the merged histograms
// are cast back.
var sqliteUpsert = "INSERT INTO trace_rollups AS r (" + keyColumns + ", " + countColumns + ") VALUES (" +
	strings.TrimSuffix(strings.Repeat("?, ", 21), ", ") + ")" +
	strings.NewReplacer("r.latency_hist || excluded.latency_hist", "CAST(r.latency_hist || excluded.latency_hist AS BLOB)",
		"r.ttfb_hist || excluded.ttfb_hist", "CAST(r.ttfb_hist || excluded.ttfb_hist AS BLOB)",
		"r.overhead_hist || excluded.overhead_hist", "CAST(r.overhead_hist || excluded.overhead_hist AS BLOB)").Replace(onConflict) +
	" RETURNING appends"

// sqliteKeyMatch is keyMatch with SQLite's placeholders.
var sqliteKeyMatch = strings.NewReplacer("$10", "?", "$1", "?", "$2", "?", "$3", "?", "$4", "?", "$5", "?", "$6", "?", "$7", "?", "$8", "?", "$9", "?")

// SQLite is the rollup step of a tracing.SQLiteSink (tracing.NewSQLiteSink(db, rollup.SQLite)):
// Postgres's contract, with one prepared upsert per row (in process, no round trips).
func SQLite(ctx context.Context, tx *sql.Tx, stored []*tracing.Trace) error {
	return writeSQLite(ctx, tx, Aggregate(stored))
}

func writeSQLite(ctx context.Context, tx *sql.Tx, rows []*Row) error {
	if len(rows) == 0 {
		return nil
	}
	up, err := tx.PrepareContext(ctx, sqliteUpsert)
	if err != nil {
		return fmt.Errorf("rollup: prepare: %w", err)
	}
	defer up.Close()
	var due [][]any
	for _, r := range rows {
		key := []any{r.TenantID, int64(r.Grain / time.Second), r.Start.UnixMicro(), r.Provider, r.Model, r.APIKeyID, r.StatusClass}
		args := append([]any{}, key...)
		for _, v := range r.sums() {
			args = append(args, v)
		}
		args = append(args, r.Latency.Encode(), r.TTFB.Encode(), r.Overhead.Encode())
		var appends int64
		if err := up.QueryRowContext(ctx, args...).Scan(&appends); err != nil {
			return fmt.Errorf("rollup: upsert: %w", err)
		}
		if appends >= compactEvery {
			due = append(due, key)
		}
	}
	for _, k := range due {
		var enc [3][]byte
		if err := tx.QueryRowContext(ctx, sqliteKeyMatch.Replace(selectHists), k...).Scan(&enc[0], &enc[1], &enc[2]); err != nil {
			return fmt.Errorf("rollup: compact: %w", err)
		}
		args := append([]any{}, k...)
		for _, e := range enc {
			c, err := compact(e)
			if err != nil {
				return fmt.Errorf("rollup: compact: %w", err)
			}
			args = append(args, c)
		}
		// updateHists numbers the histograms $8-$10 after the key: reorder for ?.
		q := "UPDATE trace_rollups SET latency_hist = ?, ttfb_hist = ?, overhead_hist = ?, appends = 0 WHERE " + sqliteKeyMatch.Replace(keyMatch)
		if _, err := tx.ExecContext(ctx, q, append(args[7:10:10], args[:7]...)...); err != nil {
			return fmt.Errorf("rollup: compact: %w", err)
		}
	}
	return nil
}
