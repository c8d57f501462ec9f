// Package tracing is Loom's audit write path: the Trace record of one request, the Sink
// interface that stores traces (PostgreSQL, SQLite, memory, or any store a user plugs in),
// and the Pipeline that carries traces from the request path to every sink.
//
// The gateway calls Pipeline.Record once per finished request. Record only queues the
// trace, so the request never waits on a store. A single spool writer goroutine then
// computes what belongs off the request path (PipelineConfig.Enrich: the cost), seals the
// bodies with the tenant's key (PipelineConfig.Sealer; plaintext is cleared and never
// written), and appends the trace to a write-ahead spool on local disk, making a group of
// appends durable with one fsync every few milliseconds. One shipper goroutine per sink
// reads the spool in batches and calls Sink.WriteBatch, retrying with backoff for as long
// as the sink fails transiently; a trace a sink refuses permanently (see Permanent) is set
// aside in a dead-letter file (see ReplayDeadLetter). A spool segment is deleted once every
// sink has acknowledged every record in it, each sink's position is saved, and the spool is
// replayed on start. Before a trace is spooled, its text fields are made store-safe (see
// Trace), so one hostile request cannot stop a store.
//
// The guarantee: a trace whose Record returned nil reaches every sink at least once,
// unless the process or machine crashes before the group commit covered it — normally
// within PipelineConfig.SyncInterval plus one fsync after Record, longer only while the
// writer has a backlog. With PipelineConfig.Strict, Record waits for that fsync and the
// window is closed. Sinks turn at-least-once into exactly-once by ignoring a trace ID they
// already have. Whatever cannot be kept (queue or spool full, a failed disk write, a
// damaged spool record, the backlog of a sink that lagged while the spool was full) is
// counted in Pipeline.Stats and logged, never dropped silently.
//
// Without a spool directory the same shippers work from a bounded in-memory window; a
// crash then loses what is waiting.
//
// Wiring: the gateway builds its Pipeline from loom.Config.Tracing (the sinks, the spool
// directory) and shuts it down in Gateway.Shutdown; NewPipeline is for using the pipeline on
// its own. On shutdown, first stop the HTTP server (so no request records any more), then
// shut the pipeline down, which drains to the sinks and shuts them down; the sinks' own
// resources (a database pool) are closed after that.
package tracing
