package rollup

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/loom-gateway/loom/tracing"
)

var _ tracing.SQLiteTxStep = SQLite

// SQLite is the rollup step of a tracing.SQLiteSink (tracing.NewSQLiteSink(db, rollup.SQLite)):
// Postgres's contract, one insert per tenant of the batch (in process, no round trips). A
// Folder (SQLiteFolder) adds them to the rollup tables of every grain later.
func SQLite(ctx context.Context, tx *sql.Tx, stored []*tracing.Trace) error {
	for _, d := range deltas(stored) {
		if _, err := tx.ExecContext(ctx, "INSERT INTO trace_rollup_deltas (tenant_id, first_bucket, last_bucket, rows) VALUES (?, ?, ?, ?)",
			d.tenantID, d.first.UnixMicro(), d.last.UnixMicro(), d.encode()); err != nil {
			return fmt.Errorf("rollup: append deltas: %w", err)
		}
	}
	return nil
}

func writeSQLite(ctx context.Context, tx *sql.Tx, rows []*Row) error {
	for i, part := range split(rows) {
		if len(part) == 0 {
			continue
		}
		if err := tables[i].writeSQLite(ctx, tx, part); err != nil {
			return fmt.Errorf("rollup: %s: %w", tables[i].name, err)
		}
	}
	return nil
}

func (t table) writeSQLite(ctx context.Context, tx *sql.Tx, rows []*Row) error {
	up, err := tx.PrepareContext(ctx, t.sqliteUpsert())
	if err != nil {
		return err
	}
	defer up.Close()
	var due [][]any
	for _, r := range rows {
		key := t.keyArgs(r.Key, false)
		args := append([]any{}, key...)
		for _, v := range r.sums() {
			args = append(args, v)
		}
		args = append(args, r.Latency.Encode(), r.TTFB.Encode(), r.Overhead.Encode())
		var appends int64
		if err := up.QueryRowContext(ctx, args...).Scan(&appends); err != nil {
			return fmt.Errorf("upsert: %w", err)
		}
		if appends >= compactEvery {
			due = append(due, key)
		}
	}
	for _, k := range due {
		var enc [3][]byte
		if err := tx.QueryRowContext(ctx, t.selectHists(false), k...).Scan(&enc[0], &enc[1], &enc[2]); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		args, err := compactArgs(enc)
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		if _, err := tx.ExecContext(ctx, t.updateHists(false), append(args, k...)...); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
	}
	return nil
}
