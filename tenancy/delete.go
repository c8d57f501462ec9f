package tenancy

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TenantDeleter is a Store that can hard-delete a tenant, in the two steps
// Service.DeleteTenant takes. Both built-in stores are.
type TenantDeleter interface {
	// DestroyDataKeys destroys the tenant's data keys (the tenant_data_keys rows become
	// tombstones, and a tombstone is written if it had none, so no key can be created for
	// it again) and commits. It returns ErrNotFound if there is no such tenant.
	DestroyDataKeys(ctx context.Context, tenantID string, at time.Time) error
	// DeleteTenantRows removes, in one transaction, the tenant's API keys, provider
	// configurations, the rows the store's delete steps remove (its traces), and the
	// tenant. It must run after DestroyDataKeys.
	DeleteTenantRows(ctx context.Context, tenantID string) error
}

var (
	_ TenantDeleter = (*PostgresStore)(nil)
	_ TenantDeleter = (*SQLiteStore)(nil)
)

// PostgresDeleteStep removes a tenant's rows from tables tenancy does not own, inside the
// transaction of a PostgreSQL hard delete, after the tenant's data keys are destroyed and
// before the tenant row goes. tracing.DeleteTenantTracesPostgres is one; a step recording
// the deletion in the audit ledger would be another. An error rolls the transaction back
// (the data keys stay destroyed) and DeleteTenant can be called again.
type PostgresDeleteStep func(ctx context.Context, tx pgx.Tx, tenantID string) error

// SQLiteDeleteStep is PostgresDeleteStep for the SQLite store.
type SQLiteDeleteStep func(ctx context.Context, tx *sql.Tx, tenantID string) error

// WithDeleteSteps returns a store over the same pool whose DeleteTenantRows also runs steps,
// in order, inside its transaction.
func (s *PostgresStore) WithDeleteSteps(steps ...PostgresDeleteStep) *PostgresStore {
	c := *s
	c.deleteSteps = append(append([]PostgresDeleteStep(nil), s.deleteSteps...), steps...)
	return &c
}

// WithDeleteSteps returns a store over the same database whose DeleteTenantRows also runs
// steps, in order, inside its transaction.
func (s *SQLiteStore) WithDeleteSteps(steps ...SQLiteDeleteStep) *SQLiteStore {
	c := *s
	c.deleteSteps = append(append([]SQLiteDeleteStep(nil), s.deleteSteps...), steps...)
	return &c
}

// tenantGone drops the tenant from the auth and route caches and tells the
// WithTenantDeleted hook.
func (s *Service) tenantGone(id string) {
	if s.auth != nil {
		s.auth.InvalidateTenant(id)
	}
	if s.providersChanged != nil {
		s.providersChanged(id)
	}
	if s.tenantDeleted != nil {
		s.tenantDeleted(id)
	}
}

// DeleteTenant hard-deletes a tenant (crypto-shredding). First, in a transaction of its
// own that commits before anything else is touched, the tenant's data keys are destroyed:
// from then on no ciphertext sealed for it under envelope encryption can be opened, by
// this database or any backup of its traces. Then its API keys, provider configurations,
// trace rows (through the store's delete steps) and the tenant itself are removed in a
// second transaction. The tenant's keys are refused on this process from the first step
// on. If the second step fails the error says so and DeleteTenant can be called again
// (the tenant is still there). It returns ErrNotFound if there is no such tenant, and an
// error if the Store is not a TenantDeleter.
//
// A trace still in the pipeline when the keys are destroyed can reach the database after
// the delete: its bodies are sealed under the destroyed key (or dropped, if sealed after),
// so it cannot be read, but its row stays until its month's partition is dropped.
func (s *Service) DeleteTenant(ctx context.Context, id string) error {
	d, ok := s.store.(TenantDeleter)
	if !ok {
		return fmt.Errorf("tenancy: delete tenant: the store (%T) cannot hard-delete tenants", s.store)
	}
	if err := d.DestroyDataKeys(ctx, id, s.now()); err != nil {
		return err
	}
	s.tenantGone(id)
	if err := d.DeleteTenantRows(ctx, id); err != nil {
		return fmt.Errorf("tenancy: delete tenant %s: data keys destroyed, rows not yet removed (call again): %w", id, err)
	}
	s.tenantGone(id)
	return nil
}
