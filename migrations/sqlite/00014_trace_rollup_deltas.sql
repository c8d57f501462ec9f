-- Rollup deltas: what a batch of traces adds to the rollups. The rollup step (rollup.SQLite)
-- appends one row per tenant of the batch, inside the batch's transaction: the tenant's
-- minute rows (per provider, model, API key and status class, with their counts and
-- histograms), encoded together in `rows` (rollup's delta encoding), and the first and last
-- minute they cover. One small insert per batch keeps the step's cost on the sink's write
-- throughput small, however many combinations the batch holds.
--
-- The folder (rollup.SQLiteFolder, run by the server every second) moves them into
-- trace_rollups and trace_rollup_totals at every grain: each fold deletes the deltas it adds
-- in the same transaction, so a delta is counted in exactly one place at any moment. The
-- analytics queries read the rollup tables and the deltas not yet folded at one snapshot.

-- +goose Up
CREATE TABLE trace_rollup_deltas (
    tenant_id    TEXT    NOT NULL,
    first_bucket INTEGER NOT NULL, -- unix microseconds: the first UTC minute in rows
    last_bucket  INTEGER NOT NULL, -- the last
    rows         BLOB    NOT NULL
) STRICT;

CREATE INDEX trace_rollup_deltas_tenant ON trace_rollup_deltas (tenant_id, last_bucket);

-- +goose Down
DROP TABLE trace_rollup_deltas;
