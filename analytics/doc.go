// Package analytics is the read side of Loom's traces: the tenant-scoped queries behind
// the analytics API (a page of traces, one trace, summary metrics, time series, the values
// a filter can take, and an export of a filtered set) over the same PostgreSQL and SQLite
// tables the tracing sinks write, and the http.Handler serving that API.
//
// The Store interface is what the handler needs of a database; PostgresStore and
// SQLiteStore implement it with plain SQL over the traces table, every query bound to one
// tenant (WHERE tenant_id = $1). Metrics and Values read the rollups the sinks keep in
// their batch transactions (package rollup; see rollups.go for how a range is cut into
// rollup spans and trace edges): counts and sums exactly, percentiles from log-scale
// histograms within rollup.RelativeError, marked percentiles_approximate. A query the
// rollups cannot answer (buckets off minute boundaries, values of the status field) reads
// the traces, with exact percentiles. Both stores are also a Spender: spend across tenants
// for operators.
//
// The package never imports the root package loom. The gateway mounts the Handler behind
// its own API-key authentication and gives it three hooks: Tenant (who is asking), Open
// (decrypt a trace body with the tenant's key) and WriteError (the one place errors become
// OpenAI error JSON). Errors the client must learn are typed here: *ParamError (400) and
// ErrNotFound (404).
package analytics
