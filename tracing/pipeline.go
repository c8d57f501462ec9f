package tracing

// The pipeline's public face: its configuration, construction, Record, ForceFlush and
// Shutdown. The jobs behind it each have their own file: stats.go (loss accounting and
// Stats), writer.go (the group-commit spool writer and sealing), window.go (the in-memory
// window, the segments and their cleanup) and shipper.go (one shipper per sink, with
// retry). The bytes on disk are spool.go's.

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
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
	// If empty, traces wait for the sinks in an in-memory window bounded by MaxQueue traces
	// and MaxMemoryBytes instead: a crash, or a Shutdown whose ctx ends before the sinks took everything,
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

	// MaxMemoryBytes bounds the bytes of traces held in memory (bodies included, as
	// Record receives them): those in the queue in front of the spool writer, and without
	// SpoolDir also those in the window waiting for the sinks. A trace that would go past it
	// is lost like one that finds the queue full (ErrQueueFull, Stats.LostQueueFull), so a
	// long sink outage without a spool costs traces, never the process's memory. With
	// SpoolDir the window holds at most 64 MiB besides; older records are read back from
	// the spool. If zero, 256 MiB.
	MaxMemoryBytes int64

	// MaxSpoolBytes bounds the spool's size on disk. If zero, 1 GiB.
	//
	// A trace that does not fit, because the spool holds MaxSpoolBytes or because the disk
	// is full, is counted as lost (Stats.LostSpoolFull) and logged, and a strict Record
	// returns ErrSpoolFull; traces are not held in memory meanwhile. Each segment reserves
	// its space when it starts (fallocate, on Linux), so a full disk shows up there, as a
	// full spool, rather than as torn appends. A segment is deleted as soon as every sink
	// has all of it, the one being appended to included, and the writer starts a fresh
	// one and appends again by itself once there is room.
	MaxSpoolBytes int64

	// Logger receives losses (rate-limited), retries and spool repairs. If nil, nothing is
	// logged.
	Logger *slog.Logger

	// Now is the clock for rate-limiting log lines. If nil, time.Now.
	Now func() time.Time

	// Knobs for tests in this package.
	segmentBytes       int64                                // rotate segments at this size; 0: 16 MiB
	hotMax             int                                  // in-memory window with SpoolDir, in traces; 0: max(4*BatchSize, 8192)
	retryMin, retryMax time.Duration                        // backoff bounds; 0: 100ms, 30s
	beforeSync         func()                               // called before each fsync of the spool
	createFile         func(path string) (spoolFile, error) // creates a segment file; nil: createSpoolFile
	cursorInterval     time.Duration                        // how often positions are saved; 0: 2s
}

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

	mu        sync.Mutex // guards the fields below
	segs      []*segment // oldest first; with SpoolDir the last one is being appended to
	activeSeg *segment
	hot       []hotRec // committed traces, oldest first, from hot[hotHead]; contiguous seqs
	hotHead   int
	hotBytes  int64
	lastSeq   uint64 // newest committed sequence number
	committed int64  // traces committed: replayed + appended
	shippers  []*shipper
	progress  chan struct{}   // closed and replaced whenever a shipper acknowledges
	corruptAt map[uint64]bool // sequence numbers where a shipper found damage, counted as lost once
	abandoned int64           // without SpoolDir: committed traces Shutdown gave up on

	createFile func(path string) (spoolFile, error)
	reclaimReq chan struct{} // a shipper saw the active segment fully acknowledged; capacity 1

	cursorInterval time.Duration
	saveReq        chan struct{} // a segment was deleted: save the positions; capacity 1
	stopSaver      chan struct{} // closed by Shutdown
	saverDone      chan struct{} // closed by the cursor saver on exit

	// Owned by the writer goroutine.
	active     spoolFile // nil while no segment could be started (disk full)
	activeSize int64
	nextCreate time.Time // without an active segment: when to try starting one again
	noSegErr   error     // why the last start failed
	nextSeq    uint64
	group      []pendingRec
	gbuf       []byte

	spoolBytes atomic.Int64
	maxMemory  int64
	held       atomic.Int64 // bytes of traces in the queue, and without SpoolDir in the window (see memBytes)
	recorded   atomic.Int64
	spooled    atomic.Int64
	replayed   int64
	retries    atomic.Int64
	sealErrs   atomic.Int64
	syncErrs   atomic.Int64
	lost       [numLossReasons]atomic.Int64
	lossLogAt  atomic.Int64

	deadMu      sync.Mutex // serialises appends to the dead-letter file
	quarantined atomic.Int64
	refusing    atomic.Int64 // sinks treated as down for refusing every trace

	shutStarted atomic.Bool
	shutDone    chan struct{}
	shutErr     error
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
		sinks:          slices.Clone(cfg.Sinks),
		sealer:         cfg.Sealer,
		enrich:         cfg.Enrich,
		dir:            cfg.SpoolDir,
		strict:         cfg.Strict,
		syncInterval:   orDefault(cfg.SyncInterval, 5*time.Millisecond),
		batchSize:      orDefault(cfg.BatchSize, 512),
		flushInterval:  orDefault(cfg.FlushInterval, 200*time.Millisecond),
		writeTimeout:   orDefault(cfg.WriteTimeout, 10*time.Second),
		maxSpool:       orDefault(cfg.MaxSpoolBytes, 1<<30),
		segmentBytes:   orDefault(cfg.segmentBytes, defaultSegmentBytes),
		retryMin:       orDefault(cfg.retryMin, 100*time.Millisecond),
		retryMax:       orDefault(cfg.retryMax, 30*time.Second),
		beforeSync:     cfg.beforeSync,
		createFile:     cfg.createFile,
		reclaimReq:     make(chan struct{}, 1),
		saveReq:        make(chan struct{}, 1),
		stopSaver:      make(chan struct{}),
		saverDone:      make(chan struct{}),
		cursorInterval: orDefault(cfg.cursorInterval, defaultCursorInterval),
		log:            cfg.Logger,
		now:            cfg.Now,
		crc:            crc32.MakeTable(crc32.Castagnoli),
		flushReq:       make(chan chan uint64),
		stopWriter:     make(chan struct{}),
		writerDone:     make(chan struct{}),
		quit:           make(chan struct{}),
		shutDone:       make(chan struct{}),
		progress:       make(chan struct{}),
		corruptAt:      map[uint64]bool{},
		nextSeq:        1,
	}
	maxQueue := orDefault(cfg.MaxQueue, 65536)
	p.maxMemory = orDefault(cfg.MaxMemoryBytes, 256<<20)
	p.in = make(chan item, maxQueue)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.createFile == nil {
		p.createFile = createSpoolFile
	}
	if p.dir == "" {
		p.hotMax = maxQueue
		p.hotMaxBytes = math.MaxInt64
	} else {
		p.hotMax = orDefault(cfg.hotMax, max(4*p.batchSize, 8192))
		p.hotMaxBytes = 64 << 20
	}
	acks, had := make([]uint64, len(p.sinks)), make([]int64, len(p.sinks))
	if p.dir != "" {
		var err error
		if acks, had, err = p.openSpool(); err != nil {
			return nil, err
		}
	}
	p.abortCtx, p.abort = context.WithCancelCause(context.Background())
	for i, s := range p.sinks {
		p.shippers = append(p.shippers, &shipper{sink: s, idx: i, kick: make(chan struct{}, 1),
			retry: make(chan struct{}, 1), acked: acks[i], count: had[i]})
	}
	go p.runWriter()
	if p.dir != "" {
		go p.runCursorSaver()
	} else {
		close(p.saverDone)
	}
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

// Record hands t to the pipeline and returns without I/O: it only queues the pointer. The
// pipeline owns t from then on (it enriches it, seals and clears its bodies, and hands it
// to the sinks): the caller must not read or change it after the call.
//
// If the queue is full (MaxQueue traces, or MaxMemoryBytes held), Record does not wait:
// the trace is counted as lost and logged, and ErrQueueFull is returned. After Shutdown it returns ErrClosed (also counted).
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
	size := memBytes(t)
	if p.held.Add(size) > p.maxMemory {
		p.held.Add(-size)
		p.closeMu.RUnlock()
		p.lose(lossQueueFull, 1, ErrQueueFull)
		return ErrQueueFull
	}
	select {
	case p.in <- item{t, done, size}:
	default:
		p.held.Add(-size)
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
// next start; without it, it is lost (Stats.LostShutdown, logged). With SpoolDir the queue
// is always drained into the spool first, even with a ctx that has already ended: ctx
// bounds the sink writes, not the local append. Shutdown is idempotent:
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

	close(p.stopSaver)
	<-p.saverDone
	p.mu.Lock()
	acked := p.minAckedLocked()
	positions := p.positionsLocked()
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
		if err := writeCursor(p.dir, positions, p.crc); err != nil {
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
