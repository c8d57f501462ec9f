package rollup

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DeleteTenantPostgres deletes a tenant's rollup rows and deltas inside tx: a step of a
// tenant's hard delete (tenancy's delete steps, beside tracing.DeleteTenantTracesPostgres),
// so that no count of a deleted tenant's traces outlives them.
func DeleteTenantPostgres(ctx context.Context, tx pgx.Tx, tenantID string) error {
	for _, t := range []string{"trace_rollup_deltas", fullTable.name, totalTable.name} {
		if _, err := tx.Exec(ctx, "DELETE FROM "+t+" WHERE tenant_id = $1", tenantID); err != nil {
			return fmt.Errorf("rollup: delete tenant %s: %w", tenantID, err)
		}
	}
	return nil
}

// DeleteTenantSQLite is DeleteTenantPostgres for the SQLite store.
func DeleteTenantSQLite(ctx context.Context, tx *sql.Tx, tenantID string) error {
	for _, t := range []string{"trace_rollup_deltas", fullTable.name, totalTable.name} {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+t+" WHERE tenant_id = ?", tenantID); err != nil {
			return fmt.Errorf("rollup: delete tenant %s: %w", tenantID, err)
		}
	}
	return nil
}
