package rollup

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-gateway/loom/tracing"
)

// RebuildStats says what a rebuild did.
type RebuildStats struct {
	From, To time.Time // the range rebuilt, whole UTC days
	Traces   int64     // traces counted
	Rows     int64     // rollup rows written
}

// day is what a rebuild works in: every grain divides it, so every row it deletes and
// rewrites covers only traces it reads.
const day = 24 * time.Hour

// rebuildColumns are the traces columns a rollup counts.
const rebuildColumns = "tenant_id, provider, model, api_key_id, status, created_at, prompt_tokens, completion_tokens, " +
	"cached_tokens, reasoning_tokens, cost_micro_usd, latency_us, ttfb_us, overhead_us"

// wholeDays widens [from, to) to whole UTC days.
func wholeDays(from, to time.Time) (time.Time, time.Time) {
	from = bucketStart(from, day)
	end := bucketStart(to, day)
	if end.Before(to) {
		end = end.Add(day)
	}
	return from, end
}

// rebuildDays runs one for each day of st's range, then for each other day a malformed
// delta it dropped reached into (the delta's counts of those days are gone with it, so they
// are counted again), widening st's range to them.
func rebuildDays(st *RebuildStats, one func(d time.Time, malformed func(first, last time.Time)) error) error {
	var todo []time.Time
	for d := st.From; d.Before(st.To); d = d.Add(day) {
		todo = append(todo, d)
	}
	done := map[int64]bool{}
	for len(todo) > 0 {
		d := todo[0]
		todo = todo[1:]
		if done[d.UnixMicro()] {
			continue
		}
		done[d.UnixMicro()] = true
		err := one(d, func(first, last time.Time) {
			for x := bucketStart(first, day); !x.After(last); x = x.Add(day) {
				if !x.Equal(d) {
					delete(done, x.UnixMicro()) // again, if done before the delta came
					todo = append(todo, x)
				}
				if x.Before(st.From) {
					st.From = x
				}
				if !x.Before(st.To) {
					st.To = x.Add(day)
				}
			}
		})
		if err != nil {
			return fmt.Errorf("rollup: rebuild %s: %w", d.Format(time.DateOnly), err)
		}
	}
	return nil
}

// outside is an addRow of the minute rows outside the UTC day d: a rebuild of d takes the
// deltas that reach into it, counts d's traces again and folds the rest.
func (a aggregator) outside(d time.Time) func(*Row) error {
	return func(r *Row) error {
		if r.Start.Before(d) || !r.Start.Before(d.Add(day)) {
			return a.addRow(r)
		}
		return nil
	}
}

// RebuildPostgres recomputes the rollups of the traces created in [from, to), widened to
// whole UTC days, from the traces table; zero from and to take every day with traces. Each
// day is one transaction that replaces the day's rollup rows and takes the deltas reaching
// into it (folding their rows of other days), and blocks the sinks' rollup steps and the
// folders while it runs (a share lock on the deltas and the rollup tables taken before it
// reads the traces), so a batch committing meanwhile is counted exactly once: either its
// traces are read, or its deltas come after.
func RebuildPostgres(ctx context.Context, pool *pgxpool.Pool, from, to time.Time) (RebuildStats, error) {
	if from.IsZero() || to.IsZero() {
		var lo, hi *time.Time
		if err := pool.QueryRow(ctx, "SELECT min(created_at), max(created_at) FROM traces").Scan(&lo, &hi); err != nil {
			return RebuildStats{}, fmt.Errorf("rollup: rebuild: %w", err)
		}
		if lo == nil {
			return RebuildStats{}, nil
		}
		if from.IsZero() {
			from = *lo
		}
		if to.IsZero() {
			to = hi.Add(time.Microsecond)
		}
	}
	st := RebuildStats{}
	st.From, st.To = wholeDays(from, to)
	err := rebuildDays(&st, func(d time.Time, malformed func(first, last time.Time)) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			// The folders lock the deltas first, then the tables, and so does this.
			if _, err := tx.Exec(ctx, "LOCK TABLE trace_rollup_deltas, trace_rollups, trace_rollup_totals IN SHARE ROW EXCLUSIVE MODE"); err != nil {
				return err
			}
			carried := aggregator{}
			if _, err := takeDeltasPostgres(ctx, tx, "last_bucket >= $1 AND first_bucket < $2", []any{d, d.Add(day)}, carried.outside(d), malformed); err != nil {
				return err
			}
			for _, t := range tables {
				if _, err := tx.Exec(ctx, "DELETE FROM "+t.name+" WHERE grain_s IN (60, 900, 3600, 21600) AND bucket_start >= $1 AND bucket_start < $2",
					d, d.Add(day)); err != nil {
					return err
				}
			}
			rows, err := tx.Query(ctx, "SELECT "+rebuildColumns+" FROM traces WHERE created_at >= $1 AND created_at < $2", d, d.Add(day))
			if err != nil {
				return err
			}
			a := aggregator{}
			var t tracing.Trace
			_, err = pgx.ForEachRow(rows, []any{&t.TenantID, &t.Provider, &t.Model, &t.APIKeyID, &t.Status, &t.CreatedAt,
				&t.PromptTokens, &t.CompletionTokens, &t.CachedTokens, &t.ReasoningTokens, &t.CostMicroUSD, &t.LatencyUS,
				&t.TTFBUS, &t.OverheadUS}, func() error {
				st.Traces++
				a.add(&t)
				return nil
			})
			if err != nil {
				return err
			}
			out := a.rows()
			st.Rows += int64(len(out))
			return writePostgres(ctx, tx, append(out, carried.rows()...))
		})
	})
	return st, err
}

// RebuildSQLite is RebuildPostgres for the SQLite store (whose one writer at a time keeps
// the sink out while a day is rebuilt).
func RebuildSQLite(ctx context.Context, db *sql.DB, from, to time.Time) (RebuildStats, error) {
	if from.IsZero() || to.IsZero() {
		var lo, hi sql.NullInt64
		if err := db.QueryRowContext(ctx, "SELECT min(created_at), max(created_at) FROM traces").Scan(&lo, &hi); err != nil {
			return RebuildStats{}, fmt.Errorf("rollup: rebuild: %w", err)
		}
		if !lo.Valid {
			return RebuildStats{}, nil
		}
		if from.IsZero() {
			from = time.UnixMicro(lo.Int64)
		}
		if to.IsZero() {
			to = time.UnixMicro(hi.Int64 + 1)
		}
	}
	st := RebuildStats{}
	st.From, st.To = wholeDays(from, to)
	err := rebuildDays(&st, func(d time.Time, malformed func(first, last time.Time)) error {
		return rebuildSQLiteDay(ctx, db, d, &st, malformed)
	})
	return st, err
}

func rebuildSQLiteDay(ctx context.Context, db *sql.DB, d time.Time, st *RebuildStats, malformed func(first, last time.Time)) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	lo, hi := d.UnixMicro(), d.Add(day).UnixMicro()
	// The delete comes first, so the transaction holds the write lock before it reads.
	carried := aggregator{}
	if _, err := takeDeltasSQLite(ctx, tx, "last_bucket >= ? AND first_bucket < ?", []any{lo, hi}, carried.outside(d), malformed); err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+t.name+" WHERE grain_s IN (60, 900, 3600, 21600) AND bucket_start >= ? AND bucket_start < ?", lo, hi); err != nil {
			return err
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT "+rebuildColumns+" FROM traces WHERE created_at >= ? AND created_at < ?", lo, hi)
	if err != nil {
		return err
	}
	a := aggregator{}
	var (
		t  tracing.Trace
		at int64
	)
	for rows.Next() {
		if err := rows.Scan(&t.TenantID, &t.Provider, &t.Model, &t.APIKeyID, &t.Status, &at, &t.PromptTokens,
			&t.CompletionTokens, &t.CachedTokens, &t.ReasoningTokens, &t.CostMicroUSD, &t.LatencyUS, &t.TTFBUS, &t.OverheadUS); err != nil {
			rows.Close()
			return err
		}
		t.CreatedAt = time.UnixMicro(at)
		st.Traces++
		a.add(&t)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	out := a.rows()
	st.Rows += int64(len(out))
	if err := writeSQLite(ctx, tx, append(out, carried.rows()...)); err != nil {
		return err
	}
	return tx.Commit()
}
