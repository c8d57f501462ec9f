package tracing

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DeleteTenantTracesPostgres deletes every trace row of a tenant, inside tx: the hard delete
// of a tenant (a tenancy.PostgresDeleteStep). Trace rows are immutable, and the traces
// trigger lets a DELETE through only in a transaction that names the row's tenant in the
// transaction-local setting loom.tenant_delete (set here) and only once that tenant's data
// keys are destroyed (migration 00011): the rows are unreadable before they leave.
func DeleteTenantTracesPostgres(ctx context.Context, tx pgx.Tx, tenantID string) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('loom.tenant_delete', $1, true)`, tenantID); err != nil {
		return fmt.Errorf("tracing: delete traces of tenant %s: %w", tenantID, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM traces WHERE tenant_id = $1`, tenantID); err != nil {
		return fmt.Errorf("tracing: delete traces of tenant %s: %w", tenantID, err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('loom.tenant_delete', '', true)`); err != nil {
		return fmt.Errorf("tracing: delete traces of tenant %s: %w", tenantID, err)
	}
	return nil
}

// DeleteTenantTracesSQLite is DeleteTenantTracesPostgres for the SQLite sink's table (a
// tenancy.SQLiteDeleteStep): the grant the traces trigger asks for is a trace_delete_grants
// row, inserted and removed again inside tx, so it is never committed.
func DeleteTenantTracesSQLite(ctx context.Context, tx *sql.Tx, tenantID string) error {
	for _, q := range []string{
		`INSERT INTO trace_delete_grants (tenant_id) VALUES (?)`,
		`DELETE FROM traces WHERE tenant_id = ?`,
		`DELETE FROM trace_delete_grants WHERE tenant_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, tenantID); err != nil {
			return fmt.Errorf("tracing: delete traces of tenant %s: %w", tenantID, err)
		}
	}
	return nil
}
