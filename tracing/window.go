package tracing

// The window: what the shippers read from. Committed traces stay in an in-memory window
// (hot) while it has room, and with SpoolDir in segment files on disk. This file replays the
// spool on start, rotates segments, and trims both the window and the segments once every
// sink has acknowledged what they hold.

import (
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

type hotRec struct {
	seq  uint64
	t    *Trace
	size int64
}

// openSpool replays SpoolDir and opens a fresh segment to append to. It returns each
// sink's acknowledged position, where its shipper starts, and how many of the replayed
// records each sink had acknowledged already (so that all shippers count from the same
// point; see writtenLocked).
func (p *Pipeline) openSpool() (acks []uint64, had []int64, err error) {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("tracing: spool: %w", err)
	}
	saved, err := readCursor(p.dir, p.crc)
	if err != nil {
		p.log.Error("tracing: spool cursor", "dir", p.dir, "err", err)
	}
	acks = startPositions(saved, len(p.sinks))
	low := slices.Min(acks)
	firsts, err := listSegments(p.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: spool: %w", err)
	}
	last := slices.Max(acks)
	pending := make([]int64, len(acks))
	for i, first := range firsts {
		last = max(last, first-1)
		path := segPath(p.dir, first)
		var nextFirst uint64
		if i+1 < len(firsts) {
			nextFirst = firsts[i+1]
		}
		seg, segPending, rep, err := scanSegment(path, first, acks, nextFirst, p.crc)
		if err != nil {
			return nil, nil, fmt.Errorf("tracing: spool replay: %w", err)
		}
		last = max(last, seg.last)
		if rep.damaged > 0 {
			err := fmt.Errorf("tracing: spool replay: %s: skipped %d damaged bytes (kept in %s), %d records lost",
				path, rep.damaged, path+corruptExt, rep.lost)
			if rep.lost > 0 {
				p.lose(lossCorrupt, rep.lost, err)
			} else {
				p.log.Warn("tracing: spool replay: damage held no record", "err", err)
			}
		}
		if seg.last <= low {
			// Empty, or every sink has everything in it.
			if err := os.Remove(path); err != nil {
				return nil, nil, fmt.Errorf("tracing: spool: %w", err)
			}
			continue
		}
		p.segs = append(p.segs, seg)
		p.spoolBytes.Add(seg.size)
		for i, n := range segPending {
			pending[i] += n
		}
	}
	p.replayed = slices.Max(pending)
	had = make([]int64, len(acks))
	for i, n := range pending {
		had[i] = p.replayed - n
	}
	p.nextSeq = last + 1
	p.lastSeq = last
	p.committed = p.replayed
	if err := p.startSegment(); isNoSpace(err) {
		// Start anyway: the writer starts a segment once there is room (see ensureSegment).
		p.log.Error("tracing: spool: disk full, no segment to append to yet", "dir", p.dir, "err", err)
		p.noSegErr = err
	} else if err != nil {
		return nil, nil, fmt.Errorf("tracing: spool: %w", err)
	}
	if p.replayed > 0 {
		p.log.Info("tracing: replaying spool", "dir", p.dir, "traces", p.replayed, "segments", len(p.segs)-1)
	}
	return acks, had, nil
}

func (p *Pipeline) minAckedLocked() uint64 {
	m := uint64(math.MaxUint64)
	for _, sh := range p.shippers {
		m = min(m, sh.position())
	}
	return m
}

func (p *Pipeline) writtenLocked() int64 {
	// Each shipper's count starts at the replayed records its sink already had (openSpool),
	// so the counts compare; a record is written once the slowest sink has it.
	if len(p.shippers) == 0 {
		return 0 // not started yet
	}
	w := int64(math.MaxInt64)
	for _, sh := range p.shippers {
		w = min(w, sh.count)
	}
	return w
}

// segmentRetry is how often the writer tries to start a segment while the disk is full.
const segmentRetry = 100 * time.Millisecond

// startSegment starts a new segment at nextSeq, reserving a whole segment's space (or what
// MaxSpoolBytes leaves) where the file system allows, and makes it the one appended to.
// The old active segment, if any, is closed only once the new one exists.
func (p *Pipeline) startSegment() error {
	room := max(min(p.segmentBytes, p.maxSpool-p.spoolBytes.Load()), segHeaderLen)
	seg, f, err := createSegment(p.createFile, p.dir, p.nextSeq, room)
	if err != nil {
		return err
	}
	if p.active != nil {
		p.active.Close()
	}
	p.active, p.activeSize = f, seg.size
	p.spoolBytes.Add(seg.size)
	p.mu.Lock()
	p.segs = append(p.segs, seg)
	p.activeSeg = seg
	p.mu.Unlock()
	return nil
}

// rotate starts a new segment. On failure the writer keeps appending to the old one.
func (p *Pipeline) rotate() {
	if err := p.startSegment(); err != nil {
		p.log.Error("tracing: spool: cannot start a new segment", "err", err)
	}
}

// ensureSegment starts a segment if there is none (the disk was full when the last one was
// reclaimed, or at start), trying at most every segmentRetry. It reports whether there is
// one to append to.
func (p *Pipeline) ensureSegment() bool {
	if p.active != nil {
		return true
	}
	now := p.now()
	if now.Before(p.nextCreate) {
		return false
	}
	if err := p.startSegment(); err != nil {
		p.nextCreate, p.noSegErr = now.Add(segmentRetry), err
		return false
	}
	p.log.Info("tracing: spool: appending again", "dir", p.dir)
	return true
}

// removeShippedLocked deletes the segments, but the one being appended to, whose records
// every sink has. It runs under the lock (rare: once per segment), so that whoever sees an
// acknowledgement also sees the space freed.
func (p *Pipeline) removeShippedLocked(acked uint64) {
	for len(p.segs) > 0 && p.segs[0] != p.activeSeg && p.segs[0].last <= acked {
		if err := os.Remove(p.segs[0].path); err != nil {
			p.log.Error("tracing: spool: removing a shipped segment", "err", err)
		}
		p.spoolBytes.Add(-p.segs[0].size)
		p.segs[0] = nil
		p.segs = p.segs[1:]
		p.askSave()
	}
}

// reclaimMin is the size from which an acknowledged active segment is reclaimed as soon as
// a shipper notices, not only when the spool is full: a quarter segment, at most 1 MiB, so
// that a fast sink does not make the writer start a segment per group commit.
func (p *Pipeline) reclaimMin() int64 { return min(p.segmentBytes/4, 1<<20) }

// reclaimActive deletes the segment being appended to once every sink has all of it, and
// starts a fresh one: how a spool that filled up (MaxSpoolBytes, or the disk) recovers
// although the full segment is the current one. Only the writer calls it. It reports
// whether it freed the segment and there is a new one to append to.
func (p *Pipeline) reclaimActive() bool {
	p.mu.Lock()
	seg := p.activeSeg
	done := seg != nil && seg.count > 0 && seg.last <= p.minAckedLocked()
	if done {
		p.activeSeg = nil
		p.segs = slices.DeleteFunc(p.segs, func(s *segment) bool { return s == seg })
		p.spoolBytes.Add(-seg.size)
		p.removeShippedLocked(p.minAckedLocked())
	}
	p.mu.Unlock()
	if !done {
		return false
	}
	p.active.Close()
	p.active, p.activeSize = nil, 0
	if err := os.Remove(seg.path); err != nil {
		p.log.Error("tracing: spool: removing a shipped segment", "err", err)
	}
	p.askSave()
	p.nextCreate = time.Time{}
	return p.ensureSegment()
}

// reclaim runs when the spool is at MaxSpoolBytes; it reports whether need more bytes fit
// after reclaiming the active segment or shedding lagging sinks' backlog.
func (p *Pipeline) reclaim(need int64) bool {
	for p.spoolBytes.Load()+need > p.maxSpool {
		if !p.reclaimActive() && !p.shedLaggards() {
			return false
		}
	}
	return true
}

// shedLaggards runs when the spool is full (MaxSpoolBytes or the disk). If the oldest
// segment is kept only for sinks that lag while another sink has all of it, those sinks'
// backlog in it is dropped, counted as their loss (Stats.LostLagging, per sink) and logged,
// and the segment deleted: one sink that is down must not make the healthy sinks and new
// traces lose too. A spool full because no sink has the oldest segment (an outage of every
// sink) sheds nothing; new traces are then lost as spool_full. It reports whether it freed
// a segment.
func (p *Pipeline) shedLaggards() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.segs) == 0 || p.segs[0] == p.activeSeg || p.segs[0].count == 0 {
		return false
	}
	seg := p.segs[0]
	if !slices.ContainsFunc(p.shippers, func(sh *shipper) bool { return sh.position() >= seg.last }) {
		return false
	}
	for _, sh := range p.shippers {
		pos := sh.position()
		if pos >= seg.last {
			continue
		}
		// Counted now, so Stats shows it while the sink is still down; the shipper takes
		// back what a batch in flight delivers after all (see skipLaggedLocked).
		n := int64(seg.last - max(pos, seg.first-1))
		sh.skipTo, sh.shed = seg.last, sh.shed+n
		p.lost[lossLagging].Add(n)
		p.log.Error("tracing: spool full while a sink lags: its oldest backlog is dropped",
			"sink", sh.idx, "traces", n, "through_seq", seg.last)
	}
	m := p.minAckedLocked()
	for p.hotHead < len(p.hot) && p.hot[p.hotHead].seq <= m {
		p.popHotLocked()
	}
	p.removeShippedLocked(m)
	close(p.progress)
	p.progress = make(chan struct{})
	return true
}

// popHotLocked drops the oldest record of the window and returns its size.
func (p *Pipeline) popHotLocked() int64 {
	size := p.hot[p.hotHead].size
	p.hotBytes -= size
	p.hot[p.hotHead] = hotRec{}
	p.hotHead++
	switch {
	case p.hotHead == len(p.hot):
		p.hot, p.hotHead = p.hot[:0], 0
	case p.hotHead >= 1024 && p.hotHead*2 >= len(p.hot):
		n := copy(p.hot, p.hot[p.hotHead:])
		clear(p.hot[n:])
		p.hot, p.hotHead = p.hot[:n], 0
	}
	return size
}

// ack records that sh's sink has everything through the given sequence number, trims the
// in-memory window, and deletes the segments every sink is done with.
func (p *Pipeline) ack(sh *shipper, through uint64, n int) {
	p.mu.Lock()
	sh.acked = max(sh.acked, through)
	sh.count += int64(n)
	m := p.minAckedLocked()
	var freed int64
	for p.hotHead < len(p.hot) && p.hot[p.hotHead].seq <= m {
		freed += p.popHotLocked()
	}
	if p.dir == "" {
		p.held.Add(-freed) // the window's share of MaxMemoryBytes (see add)
	}
	p.removeShippedLocked(m)
	if s := p.activeSeg; s != nil && s.count > 0 && s.last <= m && s.size >= p.reclaimMin() {
		select {
		case p.reclaimReq <- struct{}{}:
		default:
		}
	}
	close(p.progress)
	p.progress = make(chan struct{})
	p.mu.Unlock()
}
