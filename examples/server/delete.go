package main

import (
	"context"
	"database/sql"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loom-gateway/loom/ledger"
)

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
