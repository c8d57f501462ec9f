-- The audit ledger (package ledger); see migrations/postgres/00006_ledger.sql. SQLite has
-- one writer at a time, so the batch transaction itself serialises the log heads.

-- +goose Up
CREATE TABLE ledger_logs (
    tenant_id     TEXT    NOT NULL,
    month         TEXT    NOT NULL,
    size          INTEGER NOT NULL DEFAULT 0,
    range_hashes  BLOB    NOT NULL DEFAULT x'',
    root          BLOB    NOT NULL DEFAULT x'',
    exported_size INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
) STRICT;

CREATE TABLE ledger_leaves (
    tenant_id     TEXT    NOT NULL,
    month         TEXT    NOT NULL,
    leaf_index    INTEGER NOT NULL,
    trace_id      TEXT    NOT NULL,
    leaf_hash     BLOB    NOT NULL,
    request_hash  BLOB    NOT NULL,
    response_hash BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, month, leaf_index)
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER ledger_leaves_no_update BEFORE UPDATE ON ledger_leaves
BEGIN
    SELECT RAISE(ABORT, 'ledger leaves are immutable');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER ledger_leaves_no_delete BEFORE DELETE ON ledger_leaves
BEGIN
    SELECT RAISE(ABORT, 'ledger leaves are immutable');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE ledger_leaves;
DROP TABLE ledger_logs;
