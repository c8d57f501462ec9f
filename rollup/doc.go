// Package rollup keeps the trace rollups: the traces aggregated per tenant, UTC minute, quarter
// hour, hour and quarter day, provider, model, API key and status class (counts, token and cost sums, and
// log-scale histograms of latency, time to first byte and overhead), in the trace_rollups
// table of migrations 00012.
//
// The rollups are maintained by a step of the trace sink's batch transaction (Postgres for
// a tracing.PostgresSink, SQLite for a tracing.SQLiteSink), so a batch's traces and their
// counts commit or roll back together: the rollups never count a trace twice, nor miss one.
// They are derived data: RebuildPostgres and RebuildSQLite recompute them from the traces.
// Package analytics reads them.
//
// Counts and sums are exact. Percentiles come from the histograms (see Bins) and are within
// RelativeError of the exact value.
package rollup
