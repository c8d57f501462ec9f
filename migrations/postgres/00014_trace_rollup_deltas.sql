-- Rollup deltas: what a batch of traces adds to the rollups. The rollup step (rollup.Postgres)
-- appends one row per tenant of the batch, inside the batch's transaction: the tenant's
-- minute rows (per provider, model, API key and status class, with their counts and
-- histograms), encoded together in `rows` (rollup's delta encoding), and the first and last
-- minute they cover. One small insert per batch keeps the step's cost on the sink's write
-- throughput small, however many combinations the batch holds.
--
-- The folder (rollup.PostgresFolder, run by the server every second) moves them into
-- trace_rollups and trace_rollup_totals at every grain: each fold deletes the deltas it adds
-- in the same transaction, so a delta is counted in exactly one place at any moment. The
-- analytics queries read the rollup tables and the deltas not yet folded at one snapshot.

-- +goose Up
CREATE TABLE trace_rollup_deltas (
    tenant_id    text        NOT NULL,
    first_bucket timestamptz NOT NULL, -- the first UTC minute in rows
    last_bucket  timestamptz NOT NULL, -- the last
    rows         bytea       NOT NULL
);

-- A delta is written once and soon deleted: kept in the row (up to a page) and not
-- compressed, which would cost the sink's transaction more than it saves.
ALTER TABLE trace_rollup_deltas SET (toast_tuple_target = 8160);
ALTER TABLE trace_rollup_deltas ALTER COLUMN rows SET STORAGE EXTERNAL;

-- A tenant's deltas over a range: what the analytics queries add to the rollup rows.
CREATE INDEX trace_rollup_deltas_tenant ON trace_rollup_deltas (tenant_id, last_bucket);

-- +goose Down
DROP TABLE trace_rollup_deltas;
