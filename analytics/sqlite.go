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
	return &SQLiteStore{sqlStore{query: func(ctx context.Context, q string, args ...any) (rows, func(), error) {
		r, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, nil, err
		}
		return r, func() { r.Close() }, nil
	}}}
}
