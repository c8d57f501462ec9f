package main

import (
	"context"
	"database/sql"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// sqliteTenancy and postgresTenancy are the tenancy stores of the server and of its admin
// command, with the hard-delete steps for the tables beside them: the ledger's record of
// the deletion, then the tenant's traces, then their rollups.
func sqliteTenancy(db *sql.DB) *tenancy.SQLiteStore {
	return tenancy.NewSQLiteStore(db).WithDeleteSteps(recordDeletionSQLite, tracing.DeleteTenantTracesSQLite, rollup.DeleteTenantSQLite)
}

func postgresTenancy(pool *pgxpool.Pool) *tenancy.PostgresStore {
	return tenancy.NewPostgresStore(pool).WithDeleteSteps(recordDeletionPostgres, tracing.DeleteTenantTracesPostgres, rollup.DeleteTenantPostgres)
}

// recordDeletionPostgres and recordDeletionSQLite are the stores' first hard-delete step
// (tenancy.PostgresDeleteStep, SQLiteDeleteStep): they record the tenant's deletion in the
// audit ledger's root log inside the delete's transaction, before its traces go, so the
// ledger still verifies without them.
func recordDeletionPostgres(ctx context.Context, tx pgx.Tx, tenantID string) error {
	return ledger.RecordTenantDeletionPostgres(ctx, tx, tenantID, time.Now())
}

func recordDeletionSQLite(ctx context.Context, tx *sql.Tx, tenantID string) error {
	return ledger.RecordTenantDeletionSQLite(ctx, tx, tenantID, time.Now())
}
