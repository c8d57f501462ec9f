// Package rollup keeps the trace rollups: the traces aggregated per tenant, UTC minute, quarter
// hour, hour and quarter day, provider, model, API key and status class (counts, token and cost sums, and
// log-scale histograms of latency, time to first byte and overhead), in the trace_rollups
// and trace_rollup_totals tables of migration 00012.
//
// The rollups are maintained in two steps. The rollup step of the trace sink's batch
// transaction (Postgres for a tracing.PostgresSink, SQLite for a tracing.SQLiteSink)
// appends what the batch adds, one trace_rollup_deltas row per tenant (migration 00014), so
// a batch's traces and their counts commit or roll back together: the rollups never count a
// trace twice, nor miss one. A Folder then adds the deltas to the rollup rows of every grain,
// in a transaction that deletes them; readers (package analytics) read the rollup rows and
// the deltas not yet folded at one snapshot. Rollups are derived data: RebuildPostgres and
// RebuildSQLite recompute them from the traces.
//
// Counts and sums are exact. Percentiles come from the histograms (see Bins) and are within
// RelativeError of the exact value.
package rollup
