package analytics

import (
	"context"
	"database/sql"
)

var _ Store = (*SQLiteStore)(nil)

// SQLiteStore reads the traces table of migrations/sqlite (created_at in unix
// microseconds), the embedded default store. Percentiles are taken by rank (window
// functions), which is what percentile_disc computes.
type SQLiteStore struct{ sqlStore }

// NewSQLiteStore returns a Store reading db, which the caller owns and has migrated.
func NewSQLiteStore(db *sql.DB) *SQLiteStore {
	s := liteStore(db)
	s.snapshot = func(ctx context.Context, fn func(*sqlStore) error) error {
		tx, err := db.BeginTx(ctx, nil) // in WAL mode, a snapshot from its first read on
		if err != nil {
			return err
		}
		defer tx.Rollback()
		return fn(liteStore(tx))
	}
	return &SQLiteStore{*s}
}

// liteStore is a sqlStore querying q (the database, or a transaction).
func liteStore(q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) *sqlStore {
	return &sqlStore{query: func(ctx context.Context, query string, args ...any) (rows, func(), error) {
		r, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return nil, nil, err
		}
		return r, func() { r.Close() }, nil
	}}
}
