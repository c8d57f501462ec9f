package analytics

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

var _ Store = (*PostgresStore)(nil)

// PostgresStore reads the traces table of migrations/postgres (monthly partitions of
// created_at) through a pgx pool. List, Get and Export are served by the indexes on
// (tenant_id, created_at, id) and (tenant_id, model, created_at, id); Metrics aggregates
// the rows of the range with percentile_disc for the percentiles.
type PostgresStore struct{ sqlStore }

// NewPostgresStore returns a Store reading through pool, which the caller owns.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore {
	return &PostgresStore{sqlStore{pg: true, query: func(ctx context.Context, sql string, args ...any) (rows, func(), error) {
		r, err := pool.Query(ctx, sql, args...)
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}}}
}
