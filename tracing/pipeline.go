package tracing

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var _ Recorder = (*Pipeline)(nil)

// Errors of Record and ForceFlush. A trace that could not be kept has been counted in
// Stats and logged by the time its error is returned.
var (
	// ErrQueueFull: the queue in front of the spool writer was full; the trace is lost.
	ErrQueueFull = errors.New("tracing: queue full, trace lost")
	// ErrClosed: the pipeline is shut down; a trace handed to Record is lost.
	ErrClosed = errors.New("tracing: pipeline shut down")
	// ErrSpoolFull: the spool holds MaxSpoolBytes; the trace is lost.
	ErrSpoolFull = errors.New("tracing: spool full, trace lost")
	// ErrNotDurable (Strict mode only): the trace is queued or written but its durable
	// append was not confirmed, because ctx ended first or fsync failed. It is not counted
	// as lost and will most likely still be delivered.
	ErrNotDurable = errors.New("tracing: trace not confirmed durable")
)

var errWriteTimeout = errors.New("tracing: sink write timed out (PipelineConfig.WriteTimeout)")

// PipelineConfig configures NewPipeline. Only Sinks is required.
type PipelineConfig struct {
	// Sinks receive every trace. At least one is required. Each sink has its own shipper
	// goroutine and acknowledges on its own: a slow or failing sink delays only itself
	// while the spool holds its backlog (without SpoolDir, a sink that stays down fills the
	// bounded in-memory window and then new traces are lost, for all sinks).
	// The traces in a batch are shared by all sinks at once and must be treated as
	// read-only.
	Sinks []Sink

	// Sealer seals RequestBody and ResponseBody into SealedRequest and SealedResponse,
	// on the spool writer goroutine, before anything is written.
	// If nil, bodies are not stored at all: RequestBody and ResponseBody are dropped, and
	// plaintext is never written. If Seal fails for a body, that body is dropped, the
	// trace is kept, and the failure is counted (Stats.SealErrors) and logged.
	Sealer Sealer

	// Enrich, if not nil, is called with each trace on the spool writer goroutine, off the
	// request path, before sealing (the gateway computes the cost here: CostMicroUSD and
	// PriceVersion). It must not keep the trace.
	Enrich func(*Trace)

	// SpoolDir is the directory of the write-ahead spool; it is created if missing. One
	// Pipeline per directory (the directory is not locked against a second process).
	// If empty, traces wait for the sinks in a bounded in-memory window of MaxQueue traces
	// instead: a crash, or a Shutdown whose ctx ends before the sinks took everything,
	// loses what is waiting (counted as Stats.LostShutdown on Shutdown).
	SpoolDir string

	// SyncInterval is the group-commit window: appends are collected for up to this long
	// (or until 1 MiB is pending) and then written and made durable with one fsync. A
	// crash loses the traces not yet covered by an fsync: normally those of the last
	// SyncInterval plus one fsync, more if the writer lags and the queue in front of it
	// holds a backlog. If zero, 5ms. If negative, a group is committed as soon as the queue
	// is momentarily empty (lowest latency, more fsyncs).
	SyncInterval time.Duration

	// Strict makes Record wait, bounded by its ctx, until the fsync that covers its trace.
	// It needs SpoolDir. If false, Record returns once the trace is queued.
	Strict bool

	// BatchSize is the largest batch handed to Sink.WriteBatch. If zero, 512.
	BatchSize int

	// FlushInterval is how long a shipper waits for a full batch before it writes a
	// partial one. If zero, 200ms.
	FlushInterval time.Duration

	// WriteTimeout bounds each WriteBatch call. If zero, 10s. A batch that fails or times
	// out is retried with exponential backoff and jitter (100ms doubling up to 30s), for
	// as long as the sink keeps failing: records are never dropped for a sink's sake.
	WriteTimeout time.Duration

	// MaxQueue bounds the queue between Record and the spool writer, in traces. When the
	// queue is full, Record does not wait: the trace is counted as lost and ErrQueueFull is
	// returned. Without SpoolDir it also bounds the in-memory window of traces waiting for
	// the sinks; when that is full the writer waits, so the queue fills up behind it.
	// If zero, 65536.
	MaxQueue int

	// MaxSpoolBytes bounds the spool's size on disk. A trace that does not fit is counted
	// as lost and logged (and a strict Record returns ErrSpoolFull). If zero, 1 GiB.
	MaxSpoolBytes int64

	// Logger receives losses (rate-limited), retries and spool repairs. If nil, nothing is
	// logged.
	Logger *slog.Logger

	// Now is the clock for rate-limiting log lines. If nil, time.Now.
	Now func() time.Time

	// Knobs for tests in this package.
	segmentBytes       int64         // rotate segments at this size; 0: 16 MiB
	hotMax             int           // in-memory window with SpoolDir, in traces; 0: max(4*BatchSize, 8192)
	retryMin, retryMax time.Duration // backoff bounds; 0: 100ms, 30s
	beforeSync         func()        // called before each fsync of the spool
}

// Stats are the pipeline's counters since NewPipeline.
type Stats struct {
	Recorded int64 // traces accepted by Record
	Written  int64 // traces acknowledged by every sink (replayed ones included)
	Pending  int64 // traces queued or spooled, not yet acknowledged by every sink
	Spooled  int64 // traces durably appended (fsynced) to the spool
	Replayed int64 // traces found in the spool at start, not yet acknowledged
	Retries  int64 // failed WriteBatch calls, each retried later

	// SealErrors counts bodies dropped because Seal failed (the trace itself was kept).
	SealErrors int64
	// SyncErrors counts failed fsyncs of the spool (traces kept, durability unconfirmed).
	SyncErrors int64

	Lost          int64 // traces that could not be kept: the sum of the Lost* counters
	LostQueueFull int64 // Record found the queue full
	LostClosed    int64 // Record was called after Shutdown
	LostSpoolFull int64 // the spool was at MaxSpoolBytes
	LostWrite     int64 // appending to the spool failed (for example, disk full)
	LostEncode    int64 // the trace could not be encoded (larger than 64 MiB)
	LostCorrupt   int64 // torn or corrupt spool tails cut at replay (one per cut)
	LostShutdown  int64 // held only in memory when Shutdown's ctx ended
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
	numLossReasons
)

var lossNames = [numLossReasons]string{"queue_full", "closed", "spool_full", "write_error",
	"encode_error", "corrupt_spool", "shutdown"}

// Pipeline is the asynchronous, durable trace write path: Record hands a trace to a
// spool writer goroutine, which enriches, seals, encodes and appends it to a write-ahead
// spool with group-committed fsync; one shipper goroutine per sink reads the spool in
// batches and writes them to its sink, retrying until the sink acknowledges. A spool
// segment is deleted once every sink has acknowledged every record in it, and the spool
// is replayed on start, so each sink gets every trace at least once; sinks make that
// exactly-once by ignoring duplicate IDs.
type Pipeline struct {
	sinks         []Sink
	sealer        Sealer
	enrich        func(*Trace)
	dir           string
	strict        bool
	syncInterval  time.Duration
	batchSize     int
	flushInterval time.Duration
	writeTimeout  time.Duration
	maxSpool      int64
	segmentBytes  int64
	hotMax        int
	hotMaxBytes   int64
	retryMin      time.Duration
	retryMax      time.Duration
	beforeSync    func()
	log           *slog.Logger
	now           func() time.Time
	crc           *crc32.Table

	closeMu sync.RWMutex // Record holds it shared while it enqueues; Shutdown takes it to close
	closed  bool
	in      chan item

	flushReq   chan chan uint64
	stopWriter chan struct{}   // closed by Shutdown: the writer drains the queue and exits
	writerDone chan struct{}   // closed by the writer on exit
	quit       chan struct{}   // closed by Shutdown once drained: idle shippers exit
	abortCtx   context.Context // cancelled when Shutdown's ctx ends, and after Shutdown
	abort      context.CancelCauseFunc
	flushTo    atomic.Uint64 // shippers ship at once, without waiting for a full batch, until acked this far
	wg         sync.WaitGroup

	mu         sync.Mutex // guards the fields below
	segs       []*segment // oldest first; with SpoolDir the last one is being appended to
	activeSeg  *segment
	hot        []hotRec // committed traces, oldest first, from hot[hotHead]; contiguous seqs
	hotHead    int
	hotBytes   int64
	lastSeq    uint64 // newest committed sequence number
	committed  int64  // traces committed: replayed + appended
	shippers   []*shipper
	progress   chan struct{} // closed and replaced whenever a shipper acknowledges
	corruptSeg map[uint64]bool
	abandoned  int64 // without SpoolDir: committed traces Shutdown gave up on

	// Owned by the writer goroutine.
	active     *os.File
	activeSize int64
	nextSeq    uint64
	group      []pendingRec
	gbuf       []byte

	spoolBytes atomic.Int64
	recorded   atomic.Int64
	spooled    atomic.Int64
	replayed   int64
	retries    atomic.Int64
	sealErrs   atomic.Int64
	syncErrs   atomic.Int64
	lost       [numLossReasons]atomic.Int64
	lossLogAt  atomic.Int64

	shutStarted atomic.Bool
	shutDone    chan struct{}
	shutErr     error
}

type item struct {
	t    *Trace
	done chan error // strict mode: receives the outcome of the durable append
}

type pendingRec struct {
	t    *Trace
	size int64
	done chan error
}

type hotRec struct {
	seq  uint64
	t    *Trace
	size int64
}

type shipper struct {
	sink  Sink
	idx   int
	kick  chan struct{} // new data or a flush; capacity 1
	retry chan struct{} // a flush: cut a retry backoff short; capacity 1
	acked uint64        // every record up to this seq is acknowledged; written under mu by the shipper only
	count int64         // records acknowledged since start; under mu
	batch []*Trace
	rd    spoolReader
}

// NewPipeline returns a running pipeline. With SpoolDir set, it first replays the spool:
// it verifies every segment, cuts a torn or corrupt tail (counted in Stats.LostCorrupt and
// logged), and queues every record not yet acknowledged by all sinks for shipping again.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if len(cfg.Sinks) == 0 {
		return nil, errors.New("tracing: NewPipeline: no sinks")
	}
	if slices.Contains(cfg.Sinks, nil) {
		return nil, errors.New("tracing: NewPipeline: nil sink")
	}
	if cfg.Strict && cfg.SpoolDir == "" {
		return nil, errors.New("tracing: NewPipeline: Strict needs a SpoolDir")
	}
	p := &Pipeline{
		sinks:         slices.Clone(cfg.Sinks),
		sealer:        cfg.Sealer,
		enrich:        cfg.Enrich,
		dir:           cfg.SpoolDir,
		strict:        cfg.Strict,
		syncInterval:  orDefault(cfg.SyncInterval, 5*time.Millisecond),
		batchSize:     orDefault(cfg.BatchSize, 512),
		flushInterval: orDefault(cfg.FlushInterval, 200*time.Millisecond),
		writeTimeout:  orDefault(cfg.WriteTimeout, 10*time.Second),
		maxSpool:      orDefault(cfg.MaxSpoolBytes, 1<<30),
		segmentBytes:  orDefault(cfg.segmentBytes, defaultSegmentBytes),
		retryMin:      orDefault(cfg.retryMin, 100*time.Millisecond),
		retryMax:      orDefault(cfg.retryMax, 30*time.Second),
		beforeSync:    cfg.beforeSync,
		log:           cfg.Logger,
		now:           cfg.Now,
		crc:           crc32.MakeTable(crc32.Castagnoli),
		flushReq:      make(chan chan uint64),
		stopWriter:    make(chan struct{}),
		writerDone:    make(chan struct{}),
		quit:          make(chan struct{}),
		shutDone:      make(chan struct{}),
		progress:      make(chan struct{}),
		corruptSeg:    map[uint64]bool{},
		nextSeq:       1,
	}
	maxQueue := orDefault(cfg.MaxQueue, 65536)
	p.in = make(chan item, maxQueue)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.dir == "" {
		p.hotMax = maxQueue
		p.hotMaxBytes = math.MaxInt64
	} else {
		p.hotMax = orDefault(cfg.hotMax, max(4*p.batchSize, 8192))
		p.hotMaxBytes = 64 << 20
	}
	var acked uint64
	if p.dir != "" {
		var err error
		if acked, err = p.openSpool(); err != nil {
			return nil, err
		}
	}
	p.abortCtx, p.abort = context.WithCancelCause(context.Background())
	for i, s := range p.sinks {
		p.shippers = append(p.shippers, &shipper{sink: s, idx: i, kick: make(chan struct{}, 1), retry: make(chan struct{}, 1), acked: acked})
	}
	go p.runWriter()
	p.wg.Add(len(p.shippers))
	for _, sh := range p.shippers {
		go p.runShipper(sh)
	}
	return p, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// openSpool replays SpoolDir and opens a fresh segment to append to. It returns the
// sequence number every sink has acknowledged, where the shippers start.
func (p *Pipeline) openSpool() (uint64, error) {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return 0, fmt.Errorf("tracing: spool: %w", err)
	}
	acked, err := readCursor(p.dir, p.crc)
	if err != nil {
		p.log.Error("tracing: spool cursor", "dir", p.dir, "err", err)
	}
	firsts, err := listSegments(p.dir)
	if err != nil {
		return 0, fmt.Errorf("tracing: spool: %w", err)
	}
	last := acked
	for _, first := range firsts {
		last = max(last, first-1)
		path := segPath(p.dir, first)
		seg, pending, cut, err := scanSegment(path, first, acked, p.crc)
		if err != nil {
			return 0, fmt.Errorf("tracing: spool replay: %w", err)
		}
		last = max(last, seg.last)
		if cut > 0 {
			p.lose(lossCorrupt, 1, fmt.Errorf("tracing: spool replay: cut %d bytes of torn or corrupt records at the end of %s", cut, path))
		}
		if seg.last <= acked {
			// Empty, or every sink has everything in it.
			if err := os.Remove(path); err != nil {
				return 0, fmt.Errorf("tracing: spool: %w", err)
			}
			continue
		}
		p.segs = append(p.segs, seg)
		p.spoolBytes.Add(seg.size)
		p.replayed += pending
	}
	p.nextSeq = last + 1
	p.lastSeq = last
	p.committed = p.replayed
	seg, f, err := createSegment(p.dir, p.nextSeq)
	if err != nil {
		return 0, fmt.Errorf("tracing: spool: %w", err)
	}
	p.segs = append(p.segs, seg)
	p.activeSeg, p.active, p.activeSize = seg, f, seg.size
	p.spoolBytes.Add(seg.size)
	if p.replayed > 0 {
		p.log.Info("tracing: replaying spool", "dir", p.dir, "traces", p.replayed, "segments", len(p.segs)-1)
	}
	return acked, nil
}

// Record hands t to the pipeline and returns without I/O: it only queues the pointer. The
// pipeline owns t from then on (it enriches it, seals and clears its bodies, and hands it
// to the sinks): the caller must not read or change it after the call.
//
// If the queue is full, Record does not wait: the trace is counted as lost and logged,
// and ErrQueueFull is returned. After Shutdown it returns ErrClosed (also counted).
// In Strict mode Record then waits until the fsync that covers t, or ctx ends
// (ErrNotDurable: t stays queued), or t turns out not to fit the spool (the error says
// why; t is counted as lost).
func (p *Pipeline) Record(ctx context.Context, t *Trace) error {
	if t == nil {
		return errors.New("tracing: Record: nil trace")
	}
	var done chan error
	if p.strict {
		done = make(chan error, 1)
	}
	p.closeMu.RLock()
	if p.closed {
		p.closeMu.RUnlock()
		p.lose(lossClosed, 1, ErrClosed)
		return ErrClosed
	}
	select {
	case p.in <- item{t, done}:
	default:
		p.closeMu.RUnlock()
		p.lose(lossQueueFull, 1, ErrQueueFull)
		return ErrQueueFull
	}
	p.closeMu.RUnlock()
	p.recorded.Add(1)
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotDurable, context.Cause(ctx))
	}
}

// ForceFlush returns once every trace recorded before the call has been acknowledged by
// every sink, or with ctx's error when ctx ends first. Traces that were lost (see Stats)
// do not hold it up.
func (p *Pipeline) ForceFlush(ctx context.Context) error {
	reply := make(chan uint64, 1)
	var target uint64
	select {
	case p.flushReq <- reply:
		select {
		case target = <-reply:
		case <-ctx.Done():
			return fmt.Errorf("tracing: flush: %w", context.Cause(ctx))
		}
	case <-p.writerDone:
		p.mu.Lock()
		target = p.lastSeq
		p.mu.Unlock()
	case <-ctx.Done():
		return fmt.Errorf("tracing: flush: %w", context.Cause(ctx))
	}
	for {
		cur := p.flushTo.Load()
		if cur >= target || p.flushTo.CompareAndSwap(cur, target) {
			break
		}
	}
	p.kickAll()
	p.retryAll()
	if err := p.waitAcked(ctx, target); err != nil {
		return fmt.Errorf("tracing: flush: %w", err)
	}
	return nil
}

// waitAcked waits until every shipper has acknowledged through target.
func (p *Pipeline) waitAcked(ctx context.Context, target uint64) error {
	for {
		p.mu.Lock()
		done := p.minAckedLocked() >= target
		ch := p.progress
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-p.abortCtx.Done():
			select {
			case <-p.shutDone:
				return ErrClosed
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Shutdown stops accepting traces (Record then returns ErrClosed), writes everything
// queued and spooled to every sink, persists the spool cursor, and then calls each sink's
// Shutdown. If ctx ends first, in-flight writes are cancelled and Shutdown returns ctx's
// error: with SpoolDir, what the sinks have not acknowledged stays in the spool for the
// next start; without it, it is lost (Stats.LostShutdown, logged). Shutdown is idempotent:
// later calls wait for the first one and return its result.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	if !p.shutStarted.CompareAndSwap(false, true) {
		select {
		case <-p.shutDone:
			return p.shutErr
		case <-ctx.Done():
			return fmt.Errorf("tracing: shutdown: %w", context.Cause(ctx))
		}
	}
	defer close(p.shutDone)
	p.closeMu.Lock()
	p.closed = true
	p.closeMu.Unlock()

	// Ship without waiting for full batches from now on.
	p.flushTo.Store(math.MaxUint64)
	p.kickAll()
	p.retryAll()
	close(p.stopWriter)
	var errs []error
	select {
	case <-p.writerDone:
	case <-ctx.Done():
		p.abort(context.Cause(ctx))
		<-p.writerDone
	}
	p.mu.Lock()
	target := p.lastSeq
	p.mu.Unlock()
	if err := p.waitAcked(ctx, target); err != nil {
		p.abort(err)
		errs = append(errs, fmt.Errorf("tracing: shutdown: %w", err))
	} else {
		close(p.quit)
	}
	p.wg.Wait()
	p.abort(ErrClosed)

	p.mu.Lock()
	acked := p.minAckedLocked()
	left := p.committed - p.writtenLocked()
	var remove []string
	keep := p.segs[:0]
	for _, s := range p.segs {
		if s.last <= acked {
			remove = append(remove, s.path)
			p.spoolBytes.Add(-s.size)
		} else {
			keep = append(keep, s)
		}
	}
	p.segs = keep
	p.mu.Unlock()
	if p.dir != "" {
		// The cursor goes first: a crash between the two steps then re-delivers nothing
		// and loses nothing.
		if err := writeCursor(p.dir, acked, p.crc); err != nil {
			errs = append(errs, fmt.Errorf("tracing: shutdown: spool cursor: %w", err))
		} else {
			for _, path := range remove {
				if err := os.Remove(path); err != nil {
					errs = append(errs, fmt.Errorf("tracing: shutdown: %w", err))
				}
			}
		}
		if left > 0 {
			p.log.Warn("tracing: shutdown left traces in the spool for the next start", "dir", p.dir, "traces", left)
		}
	} else if left > 0 {
		p.mu.Lock()
		p.abandoned = left
		p.mu.Unlock()
		p.lose(lossShutdown, left, errors.New("tracing: shutdown ended before the sinks took every trace"))
	}
	if st := p.Stats(); st.Lost > 0 {
		p.log.Error("tracing: traces lost since start", lossAttrs(st)...)
	}
	for i, s := range p.sinks {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracing: shutdown: sink %d: %w", i, err))
		}
	}
	p.shutErr = errors.Join(errs...)
	return p.shutErr
}

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
		SealErrors:    p.sealErrs.Load(),
		SyncErrors:    p.syncErrs.Load(),
		LostQueueFull: p.lost[lossQueueFull].Load(),
		LostClosed:    p.lost[lossClosed].Load(),
		LostSpoolFull: p.lost[lossSpoolFull].Load(),
		LostWrite:     p.lost[lossWrite].Load(),
		LostEncode:    p.lost[lossEncode].Load(),
		LostCorrupt:   p.lost[lossCorrupt].Load(),
		LostShutdown:  p.lost[lossShutdown].Load(),
	}
	st.Lost = st.LostQueueFull + st.LostClosed + st.LostSpoolFull + st.LostWrite +
		st.LostEncode + st.LostCorrupt + st.LostShutdown
	// Accepted this run but not committed yet: in the queue or in the writer's hands.
	inFlight := st.Recorded - (committed - st.Replayed) -
		(st.LostSpoolFull + st.LostWrite + st.LostEncode + st.LostShutdown - abandoned)
	st.Pending = max(committed-written-abandoned, 0) + max(inFlight, 0)
	return st
}

func lossAttrs(st Stats) []any {
	return []any{"lost", st.Lost, "queue_full", st.LostQueueFull, "closed", st.LostClosed,
		"spool_full", st.LostSpoolFull, "write_error", st.LostWrite, "encode_error", st.LostEncode,
		"corrupt_spool", st.LostCorrupt, "shutdown", st.LostShutdown}
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

func (p *Pipeline) minAckedLocked() uint64 {
	m := uint64(math.MaxUint64)
	for _, sh := range p.shippers {
		m = min(m, sh.acked)
	}
	return m
}

func (p *Pipeline) writtenLocked() int64 {
	// All shippers start at the same cursor and see the same records, so their counts
	// compare; a record is written once the slowest sink has it.
	if len(p.shippers) == 0 {
		return 0 // not started yet
	}
	w := int64(math.MaxInt64)
	for _, sh := range p.shippers {
		w = min(w, sh.count)
	}
	return w
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
// so on stop this empties the queue. Once Shutdown gives up, the rest is counted as lost.
func (p *Pipeline) drain() {
	for {
		select {
		case it := <-p.in:
			if p.abortCtx.Err() != nil {
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

// fail counts a trace as lost and tells a strict Record why.
func (p *Pipeline) fail(done chan error, r lossReason, err error) {
	p.lose(r, 1, err)
	if done != nil {
		done <- err
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
				p.fail(it.done, lossShutdown, ErrClosed)
				return
			}
		}
		p.group = append(p.group, pendingRec{t: t, done: it.done})
		return
	}
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

// prepare runs Enrich and seals the bodies, clearing the plaintext.
func (p *Pipeline) prepare(t *Trace) {
	if p.enrich != nil {
		p.enrich(t)
	}
	if p.sealer != nil {
		if t.RequestBody != nil {
			t.SealedRequest = p.seal(t, t.RequestBody, "request")
		}
		if t.ResponseBody != nil {
			t.SealedResponse = p.seal(t, t.ResponseBody, "response")
		}
	}
	if t.RequestBody != nil || t.ResponseBody != nil {
		t.RequestBody, t.ResponseBody = nil, nil
	}
}

func (p *Pipeline) seal(t *Trace, body []byte, what string) []byte {
	sealed, kv, err := p.sealer.Seal(t.TenantID, t.ID, body)
	if err != nil {
		p.sealErrs.Add(1)
		p.log.Error("tracing: sealing a body failed; the body is dropped, the trace kept",
			"trace_id", t.ID, "body", what, "err", err)
		return nil
	}
	t.KeyVersion = kv
	return sealed
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
		if _, err := p.active.Write(p.gbuf); err != nil {
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

// writeFailed handles a failed append (for example, disk full): the group is lost, and
// the segment is cut back to its last whole record.
func (p *Pipeline) writeFailed(err error) {
	n := len(p.group)
	err = fmt.Errorf("tracing: spool append: %w", err)
	p.lose(lossWrite, int64(n), err)
	for _, r := range p.group {
		if r.done != nil {
			r.done <- err
		}
	}
	p.resetGroup()
	if terr := p.active.Truncate(p.activeSize); terr != nil {
		p.log.Error("tracing: spool: cannot cut a failed append, starting a new segment", "err", terr)
		p.rotate()
	}
}

func (p *Pipeline) resetGroup() {
	clear(p.group)
	p.group = p.group[:0]
	if cap(p.gbuf) > 4<<20 {
		p.gbuf = nil
	}
	p.gbuf = p.gbuf[:0]
}

// rotate starts a new segment. On failure the writer keeps appending to the old one.
func (p *Pipeline) rotate() {
	seg, f, err := createSegment(p.dir, p.nextSeq)
	if err != nil {
		p.log.Error("tracing: spool: cannot start a new segment", "err", err)
		return
	}
	p.active.Close()
	p.active, p.activeSize = f, seg.size
	p.spoolBytes.Add(seg.size)
	p.mu.Lock()
	p.segs = append(p.segs, seg)
	p.activeSeg = seg
	p.mu.Unlock()
}

// removeShippedLocked deletes the segments, but the one being appended to, whose records
// every sink has. It runs under the lock (rare: once per segment), so that whoever sees an
// acknowledgement also sees the space freed.
func (p *Pipeline) removeShippedLocked(acked uint64) {
	for len(p.segs) > 1 && p.segs[0] != p.activeSeg && p.segs[0].last <= acked {
		if err := os.Remove(p.segs[0].path); err != nil {
			p.log.Error("tracing: spool: removing a shipped segment", "err", err)
		}
		p.spoolBytes.Add(-p.segs[0].size)
		p.segs[0] = nil
		p.segs = p.segs[1:]
	}
}

// reclaim runs when the spool is full: the segment being appended to is never deleted, so
// if every sink has all of it, the writer starts a new one and deletes the old. It reports
// whether need more bytes now fit.
func (p *Pipeline) reclaim(need int64) bool {
	p.mu.Lock()
	shipped := p.activeSeg.count > 0 && p.activeSeg.last <= p.minAckedLocked()
	p.mu.Unlock()
	if !shipped {
		return false
	}
	p.rotate()
	p.mu.Lock()
	p.removeShippedLocked(p.minAckedLocked())
	p.mu.Unlock()
	return p.spoolBytes.Load()+need <= p.maxSpool
}

func (p *Pipeline) popHotLocked() {
	p.hotBytes -= p.hot[p.hotHead].size
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
		// Damaged after it was verified: skip the rest of the segment, once, loudly.
		through = min(bad.last, stop-1)
		p.mu.Lock()
		counted := p.corruptSeg[bad.first]
		p.corruptSeg[bad.first] = true
		p.mu.Unlock()
		if !counted {
			p.lose(lossCorrupt, 1, fmt.Errorf("tracing: spool %s: skipping through record %d: %w", bad.path, through, err))
		}
		return b, through, nil
	case errors.As(err, &ce):
		return b, through, nil // deliver what came before the damage first
	case err != nil && len(b) == 0:
		return nil, 0, err
	}
	return b, through, nil
}

// deliver writes one batch to sh's sink, retrying with backoff until it succeeds. It
// returns false when Shutdown gave up.
func (p *Pipeline) deliver(sh *shipper, batch []*Trace) bool {
	backoff := p.retryMin
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeoutCause(p.abortCtx, p.writeTimeout, errWriteTimeout)
		err := sh.sink.WriteBatch(ctx, batch)
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		cancel()
		if err == nil {
			return true
		}
		if p.abortCtx.Err() != nil {
			return false
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

// ack records that sh's sink has everything through the given sequence number, trims the
// in-memory window, and deletes the segments every sink is done with.
func (p *Pipeline) ack(sh *shipper, through uint64, n int) {
	p.mu.Lock()
	sh.acked = max(sh.acked, through)
	sh.count += int64(n)
	m := p.minAckedLocked()
	for p.hotHead < len(p.hot) && p.hot[p.hotHead].seq <= m {
		p.popHotLocked()
	}
	p.removeShippedLocked(m)
	close(p.progress)
	p.progress = make(chan struct{})
	p.mu.Unlock()
}
