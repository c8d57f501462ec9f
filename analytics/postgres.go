package analytics

import (
	"context"

	"github.com/jackc/pgx/v5"
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
	s := pgStore(pool)
	s.snapshot = func(ctx context.Context, fn func(*sqlStore) error) error {
		return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			return fn(pgStore(tx))
		})
	}
	return &PostgresStore{*s}
}

// pgStore is a sqlStore querying q (a pool, or a transaction).
func pgStore(q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) *sqlStore {
	return &sqlStore{pg: true, query: func(ctx context.Context, sql string, args ...any) (rows, func(), error) {
		r, err := q.Query(ctx, sql, args...)
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}}
}
