package tracing

// Loss accounting: every trace the pipeline cannot keep is counted here by reason, and
// logged at most once a second with the running totals, so a loss is never silent. Stats
// reports these counters with the rest of the pipeline's progress.

import (
	"time"
)

// Stats are the pipeline's counters since NewPipeline.
type Stats struct {
	Recorded int64 // traces accepted by Record
	Written  int64 // traces acknowledged or set aside by every sink (replayed ones included)
	Pending  int64 // traces queued or spooled, not yet acknowledged by every sink
	Spooled  int64 // traces durably appended (fsynced) to the spool
	Replayed int64 // traces found in the spool at start, not yet acknowledged
	Retries  int64 // failed WriteBatch calls, each retried later

	// MemoryBytes is the memory traces hold now, as bounded by MaxMemoryBytes: the queue,
	// and without SpoolDir the window waiting for the sinks.
	MemoryBytes int64

	// SealErrors counts bodies dropped because Seal failed (the trace itself was kept).
	SealErrors int64
	// SyncErrors counts failed fsyncs of the spool (traces kept, durability unconfirmed).
	SyncErrors int64
	// Quarantined counts traces a sink refused permanently, set aside in the dead-letter
	// file of the spool directory (see Permanent and ReplayDeadLetter); once per sink that
	// refused.
	Quarantined int64
	// RefusingSinks is the number of sinks now treated as down because they refused
	// maxRefusedInARow (16) traces in a row; their traces wait in the spool.
	RefusingSinks int64

	Lost          int64 // traces that could not be kept: the sum of the Lost* counters
	LostQueueFull int64 // Record found the queue full
	LostClosed    int64 // Record was called after Shutdown
	LostSpoolFull int64 // the spool was at MaxSpoolBytes, or its disk was full
	LostWrite     int64 // appending to the spool failed (an I/O error other than disk full)
	LostEncode    int64 // the trace could not be encoded (larger than 64 MiB)
	LostCorrupt   int64 // records skipped as damaged in the spool (a torn tail of the newest segment counts one)
	LostShutdown  int64 // held only in memory when Shutdown's ctx ended
	LostRefused   int64 // refused permanently by a sink, with no SpoolDir to set it aside in
	// LostLagging counts records dropped from the backlog of a sink that lagged while the
	// spool was full and another sink had them (once per lagging sink; the other sinks
	// have these traces).
	LostLagging int64
}

type lossReason int

const (
	lossQueueFull lossReason = iota
	lossClosed
	lossSpoolFull
	lossWrite
	lossEncode
	lossCorrupt
	lossShutdown
	lossRefused
	lossLagging
	numLossReasons
)

var lossNames = [numLossReasons]string{"queue_full", "closed", "spool_full", "write_error",
	"encode_error", "corrupt_spool", "shutdown", "refused", "lagging_sink"}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	p.mu.Lock()
	written := p.writtenLocked()
	committed := p.committed
	abandoned := p.abandoned
	p.mu.Unlock()
	st := Stats{
		Recorded:      p.recorded.Load(),
		Written:       written,
		Spooled:       p.spooled.Load(),
		Replayed:      p.replayed,
		Retries:       p.retries.Load(),
		MemoryBytes:   p.held.Load(),
		SealErrors:    p.sealErrs.Load(),
		SyncErrors:    p.syncErrs.Load(),
		LostQueueFull: p.lost[lossQueueFull].Load(),
		LostClosed:    p.lost[lossClosed].Load(),
		LostSpoolFull: p.lost[lossSpoolFull].Load(),
		LostWrite:     p.lost[lossWrite].Load(),
		LostEncode:    p.lost[lossEncode].Load(),
		LostCorrupt:   p.lost[lossCorrupt].Load(),
		LostShutdown:  p.lost[lossShutdown].Load(),
		LostRefused:   p.lost[lossRefused].Load(),
		LostLagging:   p.lost[lossLagging].Load(),
		Quarantined:   p.quarantined.Load(),
		RefusingSinks: p.refusing.Load(),
	}
	st.Lost = st.LostQueueFull + st.LostClosed + st.LostSpoolFull + st.LostWrite +
		st.LostEncode + st.LostCorrupt + st.LostShutdown + st.LostRefused + st.LostLagging
	// Accepted this run but not committed yet: in the queue or in the writer's hands.
	inFlight := st.Recorded - (committed - st.Replayed) -
		(st.LostSpoolFull + st.LostWrite + st.LostEncode + st.LostShutdown - abandoned)
	st.Pending = max(committed-written-abandoned, 0) + max(inFlight, 0)
	return st
}

func lossAttrs(st Stats) []any {
	return []any{"lost", st.Lost, "queue_full", st.LostQueueFull, "closed", st.LostClosed,
		"spool_full", st.LostSpoolFull, "write_error", st.LostWrite, "encode_error", st.LostEncode,
		"corrupt_spool", st.LostCorrupt, "shutdown", st.LostShutdown, "refused", st.LostRefused, "lagging_sink", st.LostLagging,
		"quarantined", st.Quarantined}
}

// lose counts n lost traces and logs, at most once a second, with the running totals.
func (p *Pipeline) lose(r lossReason, n int64, err error) {
	p.lost[r].Add(n)
	now := p.now().UnixNano()
	last := p.lossLogAt.Load()
	if last != 0 && now-last < int64(time.Second) || !p.lossLogAt.CompareAndSwap(last, now) {
		return
	}
	p.log.Error("tracing: traces lost", append([]any{"reason", lossNames[r], "n", n, "err", err}, lossAttrs(p.Stats())...)...)
}

// fail counts a trace as lost and tells a strict Record why.
func (p *Pipeline) fail(done chan error, r lossReason, err error) {
	p.lose(r, 1, err)
	if done != nil {
		done <- err
	}
}
