// Package ledger makes Loom's trace history tamper-evident.
//
// Every trace is a leaf of one RFC 6962 Merkle log per (tenant, UTC month). A sink appends
// each batch to its logs inside the batch's own transaction (AppendPostgres, AppendSQLite,
// plugged in as tracing per-batch steps), so a trace row and its leaf commit together. A
// Checkpointer signs each log's size and root as a C2SP signed note (Ed25519) and exports it
// off the database; Verify recomputes every leaf from the rows and checks the logs against
// the exported checkpoints and the pinned public key, naming each edit, deletion, reordering
// or insertion it finds.
//
// A deployment-wide root log records, as signed events, every tenant log's size and root
// (each checkpoint round), and every seal and removal: its checkpoints anchor all tenant
// logs at once, so a withheld tenant checkpoint or a log removed without a trace is still
// caught.
//
// Retention goes through the ledger too: Checkpointer.Tombstone seals the logs and records
// the removal before a month's partition is dropped, and a tenant's hard delete records
// itself in its own transaction (RecordTenantDeletionPostgres, RecordTenantDeletionSQLite);
// Verify accepts what they say was removed.
//
// A leaf commits to the trace's metadata and to the SHA-256 of its sealed (encrypted)
// bodies, never to plaintext: crypto-shredding a tenant leaves its logs verifiable.
//
// The tree code is github.com/transparency-dev/merkle (compact ranges, proofs); the note
// format is golang.org/x/mod/sumdb/note. Proofs this package prints check with those
// libraries alone.
package ledger
