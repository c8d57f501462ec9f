-- The audit ledger's deployment-wide root log (package ledger): one RFC 6962 Merkle log whose
-- leaves are events. Each checkpoint round records every tenant log that grew (its size and
-- root); a tombstone records the final size and root of each log it removes (a seal), then
-- what is removed (a month's partition, a tenant, one log). Its signed checkpoints cover every
-- tenant log at once, so a withheld or lost tenant checkpoint, or a log removed without a
-- tombstone, is still detected.
--
-- ledger_root is the root log's one head row, like a ledger_logs row; writers lock it FOR
-- UPDATE before the tenant log heads they read (sinks never lock it, so no cycle). Events are
-- immutable. ledger_logs.rooted_size is the size last recorded in the root log (it only decides
-- what the next round records; the verifier does not trust it).

-- +goose Up
CREATE TABLE ledger_root (
    id            smallint PRIMARY KEY CHECK (id = 1),
    size          bigint NOT NULL DEFAULT 0,
    range_hashes  bytea  NOT NULL DEFAULT '',
    root          bytea  NOT NULL DEFAULT '',
    exported_size bigint NOT NULL DEFAULT 0
);
INSERT INTO ledger_root (id) VALUES (1);

CREATE TABLE ledger_root_events (
    event_index bigint PRIMARY KEY,
    kind        text   NOT NULL,
    tenant_id   text   NOT NULL,
    month       text   NOT NULL,
    size        bigint NOT NULL,
    root        bytea  NOT NULL,
    at_us       bigint NOT NULL,
    leaf_hash   bytea  NOT NULL
);

CREATE TRIGGER ledger_root_events_immutable
    BEFORE UPDATE OR DELETE ON ledger_root_events
    FOR EACH ROW EXECUTE FUNCTION loom_traces_immutable();

ALTER TABLE ledger_logs ADD COLUMN rooted_size bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE ledger_logs DROP COLUMN rooted_size;
DROP TABLE ledger_root_events;
DROP TABLE ledger_root;
