-- Traces: the audit record, one immutable row per request (the embedded store's copy of the
-- PostgreSQL schema, with the same columns and indexes).
--
-- created_at is unix microseconds (UTC). Rows are immutable: triggers refuse UPDATE and
-- DELETE (a trigger also turns off SQLite's truncate optimisation, so DELETE FROM traces
-- without WHERE fails too). SQLite has no partitions, so there is no retention path here
-- beyond a migration that knowingly drops the triggers. Deleting a tenant does not delete its
-- rows: its key material is destroyed (crypto-shredding).
--
-- No foreign key to tenants: traces outlive soft-deleted tenants, and are removed separately.

-- +goose Up
CREATE TABLE traces (
    id                 TEXT    NOT NULL PRIMARY KEY, -- time-ordered UUIDv7
    created_at         INTEGER NOT NULL,             -- unix microseconds, UTC
    tenant_id          TEXT    NOT NULL,
    api_key_id         TEXT    NOT NULL,
    request_id         TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    served_model       TEXT    NOT NULL,
    provider           TEXT    NOT NULL,
    stream             INTEGER NOT NULL,             -- 0 or 1
    status             INTEGER NOT NULL,
    error_type         TEXT    NOT NULL,
    client_aborted     INTEGER NOT NULL,             -- 0 or 1
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    usage_source       TEXT    NOT NULL,
    cost_micro_usd     INTEGER,                      -- NULL when the model has no price
    price_version      TEXT    NOT NULL,
    latency_us         INTEGER NOT NULL,
    ttfb_us            INTEGER NOT NULL,
    overhead_us        INTEGER NOT NULL,
    response_truncated INTEGER NOT NULL,             -- 0 or 1
    request_sealed     BLOB,                         -- AES-256-GCM ciphertext; NULL when no body
    response_sealed    BLOB,
    key_version        INTEGER NOT NULL
) STRICT;

CREATE INDEX traces_tenant_created_at ON traces (tenant_id, created_at);
CREATE INDEX traces_tenant_model ON traces (tenant_id, model);
CREATE INDEX traces_created_at ON traces (created_at);

-- +goose StatementBegin
CREATE TRIGGER traces_no_update BEFORE UPDATE ON traces
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE traces;
