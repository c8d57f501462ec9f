package tracing

// The shippers: one goroutine per sink, reading the window (or the spool files behind
// it) in batches of up to BatchSize and calling Sink.WriteBatch, retrying a failed batch
// with exponential backoff and jitter until the sink acknowledges it. A slow or failing
// sink holds up only its own shipper.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

type shipper struct {
	sink  Sink
	idx   int
	kick  chan struct{} // new data or a flush; capacity 1
	retry chan struct{} // a flush: cut a retry backoff short; capacity 1
	acked uint64        // every record up to this seq is acknowledged; written under mu by the shipper only
	count int64         // records acknowledged since start; under mu
	batch []*Trace
	rd    spoolReader

	skipTo uint64 // set when the spool was full and this sink lagged: its backlog up to here is dropped; under mu
	shed   int64  // records counted as lost for skipTo and not yet settled by skipLagged; under mu

	refused int  // single traces refused permanently in a row
	outage  bool // refused maxRefusedInARow in a row: treated as down until a write succeeds
}

// position is the sequence number up to which the sink needs nothing more: what it
// acknowledged, or the end of a backlog dropped because it lagged. Under mu.
func (sh *shipper) position() uint64 { return max(sh.acked, sh.skipTo) }

// skipLaggedLocked moves sh past the backlog shedLaggards dropped. What a batch in flight
// delivered meanwhile was counted as lost at shedding time, and is taken back here.
func (p *Pipeline) skipLaggedLocked(sh *shipper) {
	if sh.skipTo <= sh.acked {
		p.lost[lossLagging].Add(-sh.shed)
		sh.shed = 0
		return
	}
	n := int64(sh.skipTo - sh.acked)
	p.lost[lossLagging].Add(n - sh.shed)
	sh.count += n
	sh.acked, sh.shed = sh.skipTo, 0
}

// retryAll cuts the shippers' retry backoffs short: a flush wants a store that came back
// used at once.
func (p *Pipeline) retryAll() {
	for _, sh := range p.shippers {
		select {
		case sh.retry <- struct{}{}:
		default:
		}
	}
}

func (p *Pipeline) kickAll() {
	for _, sh := range p.shippers {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
}

// runShipper delivers the spool to one sink, in order, batch by batch.
func (p *Pipeline) runShipper(sh *shipper) {
	defer p.wg.Done()
	defer sh.rd.close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	waiting := false // for a full batch, since the timer was set
	backoff := p.retryMin
	for {
		p.mu.Lock()
		p.skipLaggedLocked(sh)
		avail := p.lastSeq - sh.acked
		p.mu.Unlock()
		if avail == 0 {
			select {
			case <-sh.kick:
				continue
			case <-p.quit:
				return
			case <-p.abortCtx.Done():
				return
			}
		}
		if avail < uint64(p.batchSize) && sh.acked >= p.flushTo.Load() {
			if !waiting {
				timer.Reset(p.flushInterval)
				waiting = true
			}
			select {
			case <-sh.kick:
				continue
			case <-timer.C:
			case <-p.abortCtx.Done():
				return
			}
		}
		timer.Stop()
		waiting = false
		batch, through, err := p.read(sh)
		if err != nil {
			p.log.Error("tracing: reading the spool", "sink", sh.idx, "err", err)
			if !p.sleep(jitter(backoff), sh.retry) {
				return
			}
			backoff = min(2*backoff, p.retryMax)
			continue
		}
		backoff = p.retryMin
		if len(batch) > 0 && !p.deliver(sh, batch) {
			return
		}
		clear(batch)
		p.ack(sh, through, len(batch))
	}
}

// read returns the next batch for sh: from the in-memory window when it has it, else
// from the spool files.
func (p *Pipeline) read(sh *shipper) ([]*Trace, uint64, error) {
	from := sh.acked + 1
	p.mu.Lock()
	stop := p.lastSeq + 1 // the window starts here
	if p.hotHead < len(p.hot) {
		stop = p.hot[p.hotHead].seq
	}
	if from >= stop {
		i := p.hotHead + int(from-stop)
		j := min(i+p.batchSize, len(p.hot))
		b := sh.batch[:0]
		for _, r := range p.hot[i:j] {
			b = append(b, r.t)
		}
		through := p.hot[j-1].seq
		p.mu.Unlock()
		sh.batch = b
		return b, through, nil
	}
	segs := make([]segment, len(p.segs))
	for i, s := range p.segs {
		segs[i] = *s
	}
	p.mu.Unlock()
	b, through, bad, err := sh.rd.read(segs, from, stop, p.batchSize, p.crc, sh.batch[:0])
	sh.batch = b
	var ce *corruptError
	switch {
	case errors.As(err, &ce) && len(b) == 0:
		// Damaged after replay verified it (the disk is going bad): skip to the next valid
		// record, counting what is skipped once for all shippers, loudly.
		next, off, ok := skipDamaged(bad, from, p.crc)
		through = min(next-1, stop-1)
		if ok {
			// Read on from the valid record, not through the damage again.
			if err := sh.rd.openAt(bad, off, through); err != nil {
				sh.rd.close()
			}
		}
		p.mu.Lock()
		counted := p.corruptAt[from]
		p.corruptAt[from] = true
		p.mu.Unlock()
		if !counted && through >= from {
			p.lose(lossCorrupt, int64(through-from+1), fmt.Errorf("tracing: spool %s: skipping records %d to %d: %w", bad.path, from, through, err))
		}
		return b, through, nil
	case errors.As(err, &ce):
		return b, through, nil // deliver what came before the damage first
	case err != nil && len(b) == 0:
		return nil, 0, err
	}
	return b, through, nil
}

// maxRefusedInARow is how many single traces in a row a sink may refuse permanently
// before the pipeline stops blaming the traces: a sink that refuses every trace (a wrong
// schema, a revoked grant) is down, not fed bad data, and quarantining the whole stream
// would only move it into the dead-letter file. From the 17th refusal on, the pipeline
// retries that trace with backoff like any outage, and logs it loudly, until the sink takes
// a write again.
const maxRefusedInARow = 16

// deliver writes one batch to sh's sink and returns true once the sink has every trace of
// it or the trace was set aside. A transient failure is retried with backoff until it
// succeeds; a permanent one (IsPermanent) splits the batch in halves to find the traces at
// fault, and a single refused trace is quarantined (see quarantine and maxRefusedInARow).
// It returns false when Shutdown gave up.
func (p *Pipeline) deliver(sh *shipper, batch []*Trace) bool {
	backoff := p.retryMin
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeoutCause(p.abortCtx, p.writeTimeout, errWriteTimeout)
		err := sh.sink.WriteBatch(ctx, batch)
		permanent := IsPermanent(err) && ctx.Err() == nil
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		cancel()
		if err == nil {
			if sh.outage {
				p.refusing.Add(-1)
				p.log.Info("tracing: sink takes traces again", "sink", sh.idx)
			}
			sh.refused, sh.outage = 0, false
			return true
		}
		if p.abortCtx.Err() != nil {
			return false
		}
		if permanent {
			if len(batch) > 1 {
				mid := len(batch) / 2
				return p.deliver(sh, batch[:mid]) && p.deliver(sh, batch[mid:])
			}
			switch {
			case sh.refused < maxRefusedInARow:
				sh.refused++
				qerr := p.quarantine(sh, batch[0], err)
				if qerr == nil {
					return true
				}
				err = qerr // could not set it aside: keep it, and retry
			case !sh.outage:
				sh.outage = true
				p.refusing.Add(1)
				p.log.Error("tracing: sink refuses every trace: treating as outage", "sink", sh.idx,
					"refused_in_a_row", sh.refused, "trace_id", batch[0].ID, "err", err)
			}
		}
		p.retries.Add(1)
		wait := jitter(backoff)
		p.log.Warn("tracing: sink write failed; retrying", "sink", sh.idx, "traces", len(batch),
			"attempt", attempt, "retry_in", wait, "err", err)
		if !p.sleep(wait, sh.retry) {
			return false
		}
		backoff = min(2*backoff, p.retryMax)
	}
}

// jitter spreads d over [d/2, d] so that replicas do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d, or until a flush asks for an early retry; false means Shutdown gave
// up meanwhile.
func (p *Pipeline) sleep(d time.Duration, early <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-early:
		return true
	case <-p.abortCtx.Done():
		return false
	}
}
