package rollup

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A Folder adds up to limit rows of trace_rollup_deltas to the rollup tables, at every
// grain, in one transaction that deletes the deltas it adds, and returns how many it
// folded. A delta is thus counted in exactly one place at any moment, and the analytics
// queries, which read both at one snapshot, see each trace once, folded or not. Folding
// keeps those queries fast: a busy minute's deltas become one row per key, however many
// batches wrote them.
type Folder func(ctx context.Context, limit int) (int, error)

// foldLimit is how many deltas (one per tenant and batch) a fold takes at most.
const foldLimit = 10_000

// Run folds until ctx ends: again at once while a fold finds a whole limit's worth, else
// every interval. A failed fold is reported to onErr and tried again at the next interval.
func (f Folder) Run(ctx context.Context, every time.Duration, onErr func(error)) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := f(ctx, foldLimit)
		switch {
		case err != nil && ctx.Err() == nil:
			onErr(err)
			t.Reset(every)
		case n == foldLimit:
			t.Reset(0)
		default:
			t.Reset(every)
		}
	}
}

// Start runs Run in a goroutine until the returned stop, which waits for it to return (a
// fold in flight then rolls back, its deltas left for the next folder).
func (f Folder) Start(every time.Duration, onErr func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx, every, onErr)
	}()
	return func() {
		cancel()
		<-done
	}
}

// All folds every delta that no other folder is folding meanwhile, and returns how many.
func (f Folder) All(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := f(ctx, foldLimit)
		total += n
		if err != nil || n < foldLimit {
			return total, err
		}
	}
}

// PostgresFolder folds the deltas of a PostgreSQL store. Concurrent folders (one per
// replica) take disjoint deltas (SKIP LOCKED) and lock the rows they add to in key order,
// so they neither count a delta twice nor deadlock.
func PostgresFolder(pool *pgxpool.Pool) Folder {
	return func(ctx context.Context, limit int) (int, error) {
		n := 0
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			a := aggregator{}
			var err error
			n, err = takeDeltasPostgres(ctx, tx, "ctid = ANY(ARRAY(SELECT ctid FROM trace_rollup_deltas LIMIT $1 FOR UPDATE SKIP LOCKED))",
				[]any{limit}, a.addRow, nil)
			if err != nil {
				return err
			}
			return writePostgres(ctx, tx, a.rows())
		})
		if err != nil {
			return 0, fmt.Errorf("rollup: fold: %w", err)
		}
		return n, nil
	}
}

// SQLiteFolder folds the deltas of a SQLite store.
func SQLiteFolder(db *sql.DB) Folder {
	return func(ctx context.Context, limit int) (int, error) {
		n, err := foldSQLite(ctx, db, limit)
		if err != nil {
			return 0, fmt.Errorf("rollup: fold: %w", err)
		}
		return n, nil
	}
}

func foldSQLite(ctx context.Context, db *sql.DB, limit int) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	a := aggregator{}
	n, err := takeDeltasSQLite(ctx, tx, "rowid IN (SELECT rowid FROM trace_rollup_deltas LIMIT ?)", []any{limit}, a.addRow, nil)
	if err != nil || n == 0 {
		return 0, err
	}
	if err := writeSQLite(ctx, tx, a.rows()); err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// takeDeltasPostgres deletes the deltas matching where and calls fn with each of their
// rows; it returns how many deltas it took. A delta that does not decode is an error, or,
// when malformed is set, reported to it with the minutes it covers and dropped.
func takeDeltasPostgres(ctx context.Context, tx pgx.Tx, where string, args []any, fn func(*Row) error, malformed func(first, last time.Time)) (int, error) {
	rows, err := tx.Query(ctx, "DELETE FROM trace_rollup_deltas WHERE "+where+" RETURNING tenant_id, first_bucket, last_bucket, rows", args...)
	if err != nil {
		return 0, err
	}
	var (
		tenantID    string
		first, last time.Time
		enc         []byte
		n           int
	)
	_, err = pgx.ForEachRow(rows, []any{&tenantID, &first, &last, &enc}, func() error {
		n++
		return decodeTaken(tenantID, first, last, enc, fn, malformed)
	})
	return n, err
}

// decodeTaken decodes a delta taken from the table, for takeDeltasPostgres and
// takeDeltasSQLite.
func decodeTaken(tenantID string, first, last time.Time, enc []byte, fn func(*Row) error, malformed func(first, last time.Time)) error {
	err := DecodeDelta(tenantID, enc, fn)
	if err == nil {
		return nil
	}
	if malformed == nil {
		return fmt.Errorf("delta of tenant %q for %s to %s (a rebuild of those days replaces it): %w", tenantID,
			first.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339), err)
	}
	malformed(first, last)
	return nil
}

// takeDeltasSQLite is takeDeltasPostgres for the SQLite store.
func takeDeltasSQLite(ctx context.Context, tx *sql.Tx, where string, args []any, fn func(*Row) error, malformed func(first, last time.Time)) (int, error) {
	rows, err := tx.QueryContext(ctx, "DELETE FROM trace_rollup_deltas WHERE "+where+" RETURNING tenant_id, first_bucket, last_bucket, rows", args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var (
		tenantID    string
		first, last int64
		enc         []byte
		n           int
	)
	for rows.Next() {
		if err := rows.Scan(&tenantID, &first, &last, &enc); err != nil {
			return 0, err
		}
		n++
		if err := decodeTaken(tenantID, time.UnixMicro(first), time.UnixMicro(last), enc, fn, malformed); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

// addRow adds a minute row's counts to the rows of every grain.
func (a aggregator) addRow(d *Row) error {
	for _, k := range keys(d.Key) {
		a.row(k).Merge(&d.Counts)
	}
	return nil
}
