-- The audit ledger (package ledger): one RFC 6962 Merkle log per (tenant, UTC month).
--
-- ledger_logs is each log's head: its size, the compact range of its leaves (the roots of
-- the perfect subtrees covering [0, size), 32 bytes each, left to right) and its root. A
-- sink locks the heads of a batch's logs (FOR UPDATE, in (tenant_id, month) order so
-- concurrent writers cannot deadlock) and appends inside the batch's transaction.
-- exported_size is the size of the last checkpoint the checkpointer exported; it only
-- decides what to export next and is not trusted by the verifier.
--
-- ledger_leaves gives every trace its leaf: index, leaf hash, and the SHA-256 of its sealed
-- bodies (so a verifier checks metadata without reading ciphertexts). Rows are immutable,
-- like traces.

-- +goose Up
CREATE TABLE ledger_logs (
    tenant_id     text   NOT NULL,
    month         text   NOT NULL, -- 'YYYY-MM', UTC
    size          bigint NOT NULL DEFAULT 0,
    range_hashes  bytea  NOT NULL DEFAULT '',
    root          bytea  NOT NULL DEFAULT '',
    exported_size bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);

CREATE TABLE ledger_leaves (
    tenant_id     text   NOT NULL,
    month         text   NOT NULL,
    leaf_index    bigint NOT NULL,
    trace_id      uuid   NOT NULL,
    leaf_hash     bytea  NOT NULL,
    request_hash  bytea  NOT NULL,
    response_hash bytea  NOT NULL,
    PRIMARY KEY (tenant_id, month, leaf_index)
);

CREATE TRIGGER ledger_leaves_immutable
    BEFORE UPDATE OR DELETE ON ledger_leaves
    FOR EACH ROW EXECUTE FUNCTION loom_traces_immutable();

-- +goose Down
DROP TABLE ledger_leaves;
DROP TABLE ledger_logs;
