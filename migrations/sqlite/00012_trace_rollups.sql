-- Trace rollups: the traces aggregated per tenant, time bucket, provider, model, API key and
-- status class, which the analytics summary, time series and spend queries read instead of
-- the traces themselves.
--
-- Rows are derived data, written by the rollup step (rollup.SQLite) inside the same
-- transaction as the batch of traces they count, so they are never ahead of or behind the
-- traces; `examples/server rollups rebuild` recomputes them from the traces. Each trace
-- counts in four rows of each table: its UTC minute (grain_s 60), quarter hour (900), hour (3600) and
-- quarter day (21600).
--
-- The *_hist columns are histograms over rollup's fixed log-scale bins (eight per doubling),
-- encoded as (bin, count) uvarint pairs. A batch appends its pairs (merging is
-- concatenation), and every 16th append the row is compacted (appends counts since then).

-- +goose Up
CREATE TABLE trace_rollups (
    tenant_id         TEXT    NOT NULL,
    grain_s           INTEGER NOT NULL, -- 60, 900, 3600 or 21600
    bucket_start      INTEGER NOT NULL, -- unix microseconds, a multiple of grain_s
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    api_key_id        TEXT    NOT NULL,
    status_class      INTEGER NOT NULL, -- status / 100: 2 ok, 4 and 5 errors
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    cost_micro_usd    INTEGER NOT NULL, -- over the priced traces
    unpriced          INTEGER NOT NULL, -- traces without a cost
    latency_us        INTEGER NOT NULL,
    ttfb_us           INTEGER NOT NULL, -- over the traces with ttfb_us > 0
    ttfb_count        INTEGER NOT NULL,
    overhead_us       INTEGER NOT NULL,
    latency_hist      BLOB    NOT NULL,
    ttfb_hist         BLOB    NOT NULL, -- traces with ttfb_us > 0 only
    overhead_hist     BLOB    NOT NULL,
    appends           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain_s, bucket_start, provider, model, api_key_id, status_class)
) STRICT, WITHOUT ROWID;

-- The same per tenant, bucket and status class only: what the ungrouped summary and time
-- series read, a few rows per bucket however many providers, models and keys there are.
CREATE TABLE trace_rollup_totals (
    tenant_id         TEXT    NOT NULL,
    grain_s           INTEGER NOT NULL, -- 60, 900, 3600 or 21600
    bucket_start      INTEGER NOT NULL, -- unix microseconds, a multiple of grain_s
    status_class      INTEGER NOT NULL, -- status / 100: 2 ok, 4 and 5 errors
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    cost_micro_usd    INTEGER NOT NULL, -- over the priced traces
    unpriced          INTEGER NOT NULL, -- traces without a cost
    latency_us        INTEGER NOT NULL,
    ttfb_us           INTEGER NOT NULL, -- over the traces with ttfb_us > 0
    ttfb_count        INTEGER NOT NULL,
    overhead_us       INTEGER NOT NULL,
    latency_hist      BLOB    NOT NULL,
    ttfb_hist         BLOB    NOT NULL, -- traces with ttfb_us > 0 only
    overhead_hist     BLOB    NOT NULL,
    appends           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain_s, bucket_start, status_class)
) STRICT, WITHOUT ROWID;

-- Spend across all tenants reads a time range of every tenant.
CREATE INDEX trace_rollups_grain_bucket ON trace_rollups (grain_s, bucket_start);

-- +goose Down
DROP TABLE trace_rollup_totals;
DROP TABLE trace_rollups;
