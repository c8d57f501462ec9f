-- The audit ledger's deployment-wide root log; see migrations/postgres/00013_ledger_root.sql.

-- +goose Up
CREATE TABLE ledger_root (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    size          INTEGER NOT NULL DEFAULT 0,
    range_hashes  BLOB    NOT NULL DEFAULT x'',
    root          BLOB    NOT NULL DEFAULT x'',
    exported_size INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO ledger_root (id) VALUES (1);

CREATE TABLE ledger_root_events (
    event_index INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    tenant_id   TEXT    NOT NULL,
    month       TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    root        BLOB    NOT NULL,
    at_us       INTEGER NOT NULL,
    leaf_hash   BLOB    NOT NULL
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER ledger_root_events_no_update BEFORE UPDATE ON ledger_root_events
BEGIN
    SELECT RAISE(ABORT, 'ledger root events are immutable');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER ledger_root_events_no_delete BEFORE DELETE ON ledger_root_events
BEGIN
    SELECT RAISE(ABORT, 'ledger root events are immutable');
END;
-- +goose StatementEnd

ALTER TABLE ledger_logs ADD COLUMN rooted_size INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE ledger_logs DROP COLUMN rooted_size;
DROP TABLE ledger_root_events;
DROP TABLE ledger_root;
