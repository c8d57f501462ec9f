-- Per-tenant data keys (envelope encryption, package crypto) and the one way trace rows can
-- be deleted: a hard delete of a tenant whose data keys are already destroyed. See the
-- PostgreSQL migration of the same number for the table.
--
-- SQLite has no transaction-local settings, so the hard delete inserts its tenant id into
-- trace_delete_grants, deletes the tenant's traces and removes the grant in one
-- transaction (the grant is never committed). traces_no_delete lets a DELETE through only
-- for a row whose tenant has such a grant and destroyed data keys; UPDATE stays refused.

-- +goose Up
CREATE TABLE tenant_data_keys (
    tenant_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    master_version INTEGER NOT NULL CHECK (master_version >= 0),
    wrapped        BLOB    NULL,
    created_at     INTEGER NOT NULL, -- unix microseconds, UTC
    destroyed_at   INTEGER NULL,
    PRIMARY KEY (tenant_id, version),
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL)),
    CHECK ((master_version = 0) = (destroyed_at IS NOT NULL))
) STRICT;

CREATE TABLE trace_delete_grants (
    tenant_id TEXT NOT NULL PRIMARY KEY
) STRICT;

DROP TRIGGER traces_no_delete;

-- +goose StatementBegin
CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces
WHEN NOT EXISTS (SELECT 1 FROM trace_delete_grants g WHERE g.tenant_id = OLD.tenant_id)
  OR NOT EXISTS (SELECT 1 FROM tenant_data_keys k
                 WHERE k.tenant_id = OLD.tenant_id AND k.destroyed_at IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER traces_no_delete;
-- +goose StatementBegin
CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable');
END;
-- +goose StatementEnd
DROP TABLE trace_delete_grants;
DROP TABLE tenant_data_keys;
