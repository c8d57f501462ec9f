package tracing

// The spool writer: the one goroutine that takes traces off the queue, prepares them
// (Enrich, then sealing the bodies and clearing the plaintext), encodes them into a group,
// and commits the group with one write and one fsync (group commit). It alone assigns
// sequence numbers and appends to the active segment; commit publishes a group to the
// in-memory window (window.go) and releases strict Record calls waiting for it.

import (
	"fmt"
	"time"
)

type item struct {
	t    *Trace
	done chan error // strict mode: receives the outcome of the durable append
	size int64      // memBytes(t) at Record, counted in Pipeline.held
}

// memBytes estimates the memory a trace holds: its bodies and text, and a fixed share for
// the rest of the struct and its bookkeeping.
func memBytes(t *Trace) int64 {
	n := 512 + len(t.RequestBody) + len(t.ResponseBody) + len(t.SealedRequest) + len(t.SealedResponse) +
		len(t.ID) + len(t.TenantID) + len(t.APIKeyID) + len(t.RequestID) + len(t.Model) +
		len(t.ServedModel) + len(t.Provider) + len(t.ErrorType) + len(t.PriceVersion)
	return int64(n)
}

type pendingRec struct {
	t    *Trace
	size int64
	done chan error
}

// runWriter is the spool writer: the only goroutine that prepares traces, appends to the
// spool and assigns sequence numbers.
func (p *Pipeline) runWriter() {
	defer close(p.writerDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var timerC <-chan time.Time
	commit := func() {
		p.commit()
		timer.Stop()
		timerC = nil
	}
	for {
		select {
		case it := <-p.in:
			p.add(it)
			// Take whatever else is queued without going through select for each.
		more:
			for !p.groupFull() {
				select {
				case it := <-p.in:
					p.add(it)
				default:
					break more
				}
			}
			switch {
			case len(p.group) == 0:
			case p.groupFull(), (p.dir == "" || p.syncInterval < 0) && len(p.in) == 0:
				commit()
			case timerC == nil:
				timer.Reset(p.syncInterval)
				timerC = timer.C
			}
		case <-timerC:
			timerC = nil
			p.commit()
		case <-p.reclaimReq:
			p.reclaimActive()
		case reply := <-p.flushReq:
			p.drain()
			commit()
			p.mu.Lock()
			reply <- p.lastSeq
			p.mu.Unlock()
		case <-p.stopWriter:
			p.drain()
			commit()
			if p.active != nil {
				p.active.Close()
			}
			return
		}
	}
}

// groupFull says the group is big enough to commit without waiting for SyncInterval, or
// fills the segment (commit rotates it, so segments stay close to their size).
func (p *Pipeline) groupFull() bool {
	return len(p.gbuf) >= 1<<20 || len(p.group) >= 4096 ||
		p.dir != "" && p.activeSize+int64(len(p.gbuf)) >= p.segmentBytes
}

// drain adds everything queued right now. After Shutdown's close nothing more can arrive,
// so on stop this empties the queue. With SpoolDir everything goes to the spool even when
// Shutdown's ctx has ended (its deadline bounds the sink writes, not a local append: a
// healthy disk keeps every trace for the next start); without one, once Shutdown gives up
// the rest is counted as lost.
func (p *Pipeline) drain() {
	for {
		select {
		case it := <-p.in:
			if p.dir == "" && p.abortCtx.Err() != nil {
				p.held.Add(-it.size)
				p.fail(it.done, lossShutdown, ErrClosed)
				continue
			}
			p.add(it)
			if p.groupFull() {
				p.commit()
			}
		default:
			return
		}
	}
}

// add prepares one trace and adds it to the group being committed.
func (p *Pipeline) add(it item) {
	t := it.t
	p.prepare(t)
	if p.dir == "" {
		// Wait for room in the in-memory window; the queue in front fills meanwhile, and
		// Record reports that.
		for {
			p.mu.Lock()
			room := p.hotMax - (len(p.hot) - p.hotHead) - len(p.group)
			ch := p.progress
			p.mu.Unlock()
			if room > 0 {
				break
			}
			if len(p.group) > 0 {
				p.commit()
				continue
			}
			select {
			case <-ch:
			case <-p.abortCtx.Done():
				p.held.Add(-it.size)
				p.fail(it.done, lossShutdown, ErrClosed)
				return
			}
		}
		// The window's bytes are those counted at Record, given back when every sink has
		// the trace (popHotLocked).
		p.group = append(p.group, pendingRec{t: t, size: it.size, done: it.done})
		return
	}
	p.held.Add(-it.size) // out of memory, into the spool
	start := len(p.gbuf)
	p.gbuf = append(p.gbuf, make([]byte, recHeaderLen)...)
	p.gbuf = appendTrace(p.gbuf, p.nextSeq+uint64(len(p.group)), t)
	size := int64(len(p.gbuf) - start)
	switch {
	case size-recHeaderLen > maxRecordBytes:
		p.gbuf = p.gbuf[:start]
		p.fail(it.done, lossEncode, fmt.Errorf("tracing: trace %s encodes to %d bytes, over the %d limit", t.ID, size, maxRecordBytes))
		return
	case p.spoolBytes.Load()+int64(len(p.gbuf)) > p.maxSpool && !p.reclaim(int64(len(p.gbuf))):
		p.gbuf = p.gbuf[:start]
		p.fail(it.done, lossSpoolFull, ErrSpoolFull)
		return
	}
	putRecordHeader(p.gbuf[start:], p.crc)
	p.group = append(p.group, pendingRec{t: t, size: size, done: it.done})
}

// commit makes the group durable (with SpoolDir: one write, one fsync), publishes it to
// the shippers and releases strict waiters.
func (p *Pipeline) commit() {
	if len(p.group) == 0 {
		return
	}
	n := len(p.group)
	var syncErr error
	if p.dir != "" {
		if !p.ensureSegment() {
			p.groupLost(lossSpoolFull, fmt.Errorf("%w: cannot start a spool segment: %w", ErrSpoolFull, p.noSegErr))
			return
		}
		_, err := p.active.Write(p.gbuf)
		// The disk is full. Deleting what the sinks are done with (the current segment, or
		// a lagging sink's oldest backlog) may make room; else the group is lost as
		// spool_full.
		for isNoSpace(err) && (p.reclaimActive() || p.shedLaggards()) && p.active != nil {
			p.active.Truncate(p.activeSize) // cut what the failed write left
			_, err = p.active.Write(p.gbuf)
		}
		if err != nil {
			p.writeFailed(err)
			return
		}
		if p.beforeSync != nil {
			p.beforeSync()
		}
		if err := p.active.Sync(); err != nil {
			p.syncErrs.Add(1)
			p.log.Error("tracing: spool fsync failed; traces kept, durability unconfirmed", "traces", n, "err", err)
			syncErr = fmt.Errorf("%w: fsync: %w", ErrNotDurable, err)
		}
		p.activeSize += int64(len(p.gbuf))
	}
	first := p.nextSeq
	p.mu.Lock()
	for i, r := range p.group {
		p.hot = append(p.hot, hotRec{seq: first + uint64(i), t: r.t, size: r.size})
		p.hotBytes += r.size
	}
	p.lastSeq = first + uint64(n) - 1
	p.committed += int64(n)
	if p.dir != "" {
		p.activeSeg.size = p.activeSize
		p.activeSeg.last = p.lastSeq
		p.activeSeg.count += int64(n)
		p.spoolBytes.Add(int64(len(p.gbuf)))
		// Evict the oldest from the window; a shipper that needs them reads the spool.
		for len(p.hot)-p.hotHead > p.hotMax || p.hotBytes > p.hotMaxBytes {
			p.popHotLocked()
		}
	}
	p.mu.Unlock()
	p.nextSeq += uint64(n)
	if p.dir != "" && syncErr == nil {
		p.spooled.Add(int64(n))
	}
	for _, r := range p.group {
		if r.done != nil {
			r.done <- syncErr
		}
	}
	p.resetGroup()
	p.kickAll()
	if p.dir != "" && (p.activeSize >= p.segmentBytes || syncErr != nil) {
		p.rotate()
	}
}

// writeFailed handles a failed append: the group is lost (as spool_full when the disk is
// full, else as write_error), and the segment is cut back to its last whole record.
func (p *Pipeline) writeFailed(err error) {
	if isNoSpace(err) {
		p.groupLost(lossSpoolFull, fmt.Errorf("%w: spool append: %w", ErrSpoolFull, err))
	} else {
		p.groupLost(lossWrite, fmt.Errorf("tracing: spool append: %w", err))
	}
	if p.active == nil {
		return
	}
	if terr := p.active.Truncate(p.activeSize); terr != nil {
		p.log.Error("tracing: spool: cannot cut a failed append, starting a new segment", "err", terr)
		p.rotate()
	}
}

// groupLost counts the group as lost and tells its strict Record calls.
func (p *Pipeline) groupLost(r lossReason, err error) {
	p.lose(r, int64(len(p.group)), err)
	for _, rec := range p.group {
		if rec.done != nil {
			rec.done <- err
		}
	}
	p.resetGroup()
}

func (p *Pipeline) resetGroup() {
	clear(p.group)
	p.group = p.group[:0]
	if cap(p.gbuf) > 4<<20 {
		p.gbuf = nil
	}
	p.gbuf = p.gbuf[:0]
}

// prepare runs Enrich and seals the bodies, clearing the plaintext.
func (p *Pipeline) prepare(t *Trace) {
	if p.enrich != nil {
		p.enrich(t)
	}
	// Before sealing: the tenant and trace id are the sealed bodies' additional data, and
	// must be the values stored.
	makeStoreSafe(t)
	if p.sealer != nil {
		if t.RequestBody != nil {
			t.SealedRequest = p.seal(t, t.RequestBody, BodyRequest)
		}
		if t.ResponseBody != nil {
			t.SealedResponse = p.seal(t, t.ResponseBody, BodyResponse)
		}
	}
	if t.RequestBody != nil || t.ResponseBody != nil {
		t.RequestBody, t.ResponseBody = nil, nil
	}
}

func (p *Pipeline) seal(t *Trace, body []byte, what string) []byte {
	sealed, kv, err := p.sealer.Seal(t.TenantID, BodyRecordID(t.ID, what), body)
	if err != nil {
		p.sealErrs.Add(1)
		p.log.Error("tracing: sealing a body failed; the body is dropped, the trace kept",
			"trace_id", t.ID, "body", what, "err", err)
		return nil
	}
	t.KeyVersion = kv
	return sealed
}
