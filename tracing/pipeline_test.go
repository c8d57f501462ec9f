package tracing

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pipeSealer is a fake Sealer: a recognisable prefix and the body XORed, so plaintext
// cannot appear in what it returns.
type pipeSealer struct{}

func (pipeSealer) Seal(tenantID, traceID string, plaintext []byte) ([]byte, int, error) {
	out := []byte("sealed:" + tenantID + ":" + traceID + ":")
	for _, c := range plaintext {
		out = append(out, c^0x5a)
	}
	return out, 7, nil
}

// pipeTrace is the i-th test trace as the gateway hands it over: plaintext bodies, no cost.
func pipeTrace(i int) *Trace {
	return &Trace{
		ID:               fmt.Sprintf("0190a000-0000-7000-8000-%012d", i),
		CreatedAt:        time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		TenantID:         fmt.Sprintf("tenant-%d", i%3),
		APIKeyID:         "key-1",
		RequestID:        fmt.Sprintf("req-%d", i),
		Model:            "openai/gpt-4o-mini",
		ServedModel:      "gpt-4o-mini-2024-07-18",
		Provider:         "openai",
		Stream:           i%2 == 0,
		Status:           200,
		ClientAborted:    i%7 == 0,
		PromptTokens:     int64(10 + i),
		CompletionTokens: int64(20 + i),
		CachedTokens:     int64(i % 5),
		ReasoningTokens:  int64(i % 3),
		UsageSource:      UsageReported,
		LatencyUS:        int64(1000 + i),
		TTFBUS:           int64(300 + i),
		OverheadUS:       int64(50 + i%10),
		RequestBody:      fmt.Appendf(nil, `{"messages":"secret-request-%d"}`, i),
		ResponseBody:     fmt.Appendf(nil, `{"content":"secret-response-%d"}`, i),
	}
}

// pipeEnrich prices every trace but each fifth (an unknown model: no cost).
func pipeEnrich(t *Trace) {
	if t.LatencyUS%5 == 0 {
		return
	}
	c := t.PromptTokens * 3
	t.CostMicroUSD = &c
	t.PriceVersion = "test-v1"
}

// pipeWant is what a sink must store for pipeTrace(i), given pipeSealer and pipeEnrich.
func pipeWant(i int) *Trace {
	t := pipeTrace(i)
	pipeEnrich(t)
	t.SealedRequest, t.KeyVersion, _ = pipeSealer{}.Seal(t.TenantID, BodyRecordID(t.ID, BodyRequest), t.RequestBody)
	t.SealedResponse, _, _ = pipeSealer{}.Seal(t.TenantID, BodyRecordID(t.ID, BodyResponse), t.ResponseBody)
	t.RequestBody, t.ResponseBody = nil, nil
	return t
}

func pipeWants(n int) []*Trace {
	var want []*Trace
	for i := range n {
		want = append(want, pipeWant(i))
	}
	return want
}

func sortedByID(ts []*Trace) []*Trace {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b *Trace) int { return strings.Compare(a.ID, b.ID) })
	return ts
}

// flakySink fails every WriteBatch while fail is set, and otherwise stores into a
// MemorySink. It remembers every ID it was offered.
type flakySink struct {
	*MemorySink
	fail atomic.Bool

	mu      sync.Mutex
	offered map[string]int
}

func newFlakySink(failing bool) *flakySink {
	s := &flakySink{MemorySink: NewMemorySink(), offered: map[string]int{}}
	s.fail.Store(failing)
	return s
}

func (s *flakySink) WriteBatch(ctx context.Context, batch []*Trace) error {
	s.mu.Lock()
	for _, t := range batch {
		s.offered[t.ID]++
	}
	s.mu.Unlock()
	if s.fail.Load() {
		return errors.New("store down")
	}
	return s.MemorySink.WriteBatch(ctx, batch)
}

func (s *flakySink) timesOffered(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offered[id]
}

// blockSink blocks every WriteBatch until release is closed, then stores.
type blockSink struct {
	*MemorySink
	release chan struct{}
}

func (s *blockSink) WriteBatch(ctx context.Context, batch []*Trace) error {
	select {
	case <-s.release:
		return s.MemorySink.WriteBatch(ctx, batch)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// countSink counts and discards.
type countSink struct{ n atomic.Int64 }

func (s *countSink) WriteBatch(_ context.Context, batch []*Trace) error {
	s.n.Add(int64(len(batch)))
	return nil
}
func (s *countSink) Shutdown(context.Context) error { return nil }

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newTestPipeline starts a pipeline with fast retries and flushes, and shuts it down at the
// end of the test.
func newTestPipeline(tb testing.TB, cfg PipelineConfig) *Pipeline {
	tb.Helper()
	cfg.retryMin = orDefault(cfg.retryMin, time.Millisecond)
	cfg.retryMax = orDefault(cfg.retryMax, 20*time.Millisecond)
	cfg.FlushInterval = orDefault(cfg.FlushInterval, 2*time.Millisecond)
	p, err := NewPipeline(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

// waitFor polls cond; it fails the test only if cond stays false for very long.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), 15*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func recordAll(tb testing.TB, p *Pipeline, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		if err := p.Record(tb.Context(), pipeTrace(i)); err != nil {
			tb.Fatalf("Record(%d): %v", i, err)
		}
	}
}

// spoolBytesOnDisk returns the contents of every file in dir.
func spoolBytesOnDisk(tb testing.TB, dir string) []byte {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var all []byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

func segmentCount(tb testing.TB, dir string) int {
	tb.Helper()
	firsts, err := listSegments(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return len(firsts)
}

func TestPipelineRoundTrip(t *testing.T) {
	const n = 300
	tests := []struct {
		name  string
		spool bool
		cfg   PipelineConfig
	}{
		{name: "spool", spool: true},
		{name: "spool/small window and segments", spool: true,
			cfg: PipelineConfig{BatchSize: 7, hotMax: 5, segmentBytes: 4 << 10}},
		{name: "memory"},
		{name: "memory/small window", cfg: PipelineConfig{BatchSize: 7, MaxQueue: n}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := NewMemorySink()
			cfg := tt.cfg
			cfg.Sinks, cfg.Sealer, cfg.Enrich = []Sink{sink}, pipeSealer{}, pipeEnrich
			if tt.spool {
				cfg.SpoolDir = t.TempDir()
			}
			p := newTestPipeline(t, cfg)
			recordAll(t, p, 0, n)
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(pipeWants(n), sortedByID(sink.Traces()), exactBytes); diff != "" {
				t.Errorf("sink traces (-want +got):\n%s", diff)
			}
			for _, tr := range sink.Traces() {
				if bytes.Contains(tr.SealedRequest, []byte("secret")) || bytes.Contains(tr.SealedResponse, []byte("secret")) {
					t.Fatalf("trace %s: plaintext reached the sink", tr.ID)
				}
			}
			if tt.spool {
				disk := spoolBytesOnDisk(t, cfg.SpoolDir)
				if !bytes.Contains(disk, []byte("sealed:")) && tt.cfg.segmentBytes == 0 {
					t.Errorf("spool holds no sealed bodies; the test checks nothing")
				}
				if bytes.Contains(disk, []byte("secret")) {
					t.Errorf("plaintext reached the spool")
				}
			}
			if err := p.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			want := Stats{Recorded: n, Written: n}
			if tt.spool {
				want.Spooled = n
			}
			if diff := cmp.Diff(want, p.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if !tt.spool {
				return
			}
			// A clean shutdown deleted every segment; a restart re-delivers nothing.
			if got := segmentCount(t, cfg.SpoolDir); got != 0 {
				t.Errorf("segments after a clean shutdown: %d, want 0", got)
			}
			again := &countSink{}
			p2 := newTestPipeline(t, PipelineConfig{Sinks: []Sink{again}, SpoolDir: cfg.SpoolDir})
			recordAll(t, p2, n, n+1)
			if err := p2.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if got := again.n.Load(); got != 1 {
				t.Errorf("after restart the sink got %d traces, want only the 1 new one", got)
			}
		})
	}
}

func TestPipelineSinks(t *testing.T) {
	const n = 400
	tests := []struct {
		name  string
		spool bool
	}{
		{name: "spool", spool: true},
		{name: "memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, flaky := NewMemorySink(), newFlakySink(true)
			cfg := PipelineConfig{
				Sinks:     []Sink{flaky, good},
				Sealer:    pipeSealer{},
				Enrich:    pipeEnrich,
				BatchSize: 16,
			}
			if tt.spool {
				// Small segments and window: the failing sink reads its backlog from disk.
				cfg.SpoolDir, cfg.hotMax, cfg.segmentBytes = t.TempDir(), 8, 8<<10
			}
			p := newTestPipeline(t, cfg)
			recordAll(t, p, 0, n/2)
			waitFor(t, "the good sink to get the first half", func() bool { return len(good.Traces()) == n/2 })
			recordAll(t, p, n/2, n)
			waitFor(t, "the good sink to get everything", func() bool { return len(good.Traces()) == n })
			if got := len(flaky.Traces()); got != 0 {
				t.Fatalf("the failing sink stored %d traces", got)
			}
			if st := p.Stats(); st.Written != 0 || st.Pending != n || st.Retries == 0 {
				t.Errorf("while one sink fails: Written %d (want 0), Pending %d (want %d), Retries %d (want > 0)",
					st.Written, st.Pending, n, st.Retries)
			}
			flaky.fail.Store(false)
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			for name, s := range map[string]*MemorySink{"good": good, "flaky": flaky.MemorySink} {
				if diff := cmp.Diff(pipeWants(n), sortedByID(s.Traces()), exactBytes); diff != "" {
					t.Errorf("%s sink (-want +got):\n%s", name, diff)
				}
			}
			for i := range n {
				if id := pipeTrace(i).ID; flaky.timesOffered(id) < 1 {
					t.Fatalf("trace %s never offered to the failing sink", id)
				}
			}
			if st := p.Stats(); st.Written != n || st.Pending != 0 || st.Lost != 0 {
				t.Errorf("after recovery: Written %d, Pending %d, Lost %d; want %d, 0, 0", st.Written, st.Pending, st.Lost, n)
			}
			if tt.spool {
				if got := segmentCount(t, cfg.SpoolDir); got != 1 {
					t.Errorf("segments once every sink has everything: %d, want 1 (the one being appended to)", got)
				}
			}
		})
	}
}

func TestPipelineStoreOutage(t *testing.T) {
	const n = 500
	dir := t.TempDir()
	sink := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{
		Sinks: []Sink{sink}, Sealer: pipeSealer{}, Enrich: pipeEnrich, SpoolDir: dir,
		BatchSize: 32, hotMax: 16, segmentBytes: 16 << 10,
	})
	recordAll(t, p, 0, n)
	waitFor(t, "everything spooled", func() bool { return p.Stats().Spooled == n })
	if got := segmentCount(t, dir); got < 3 {
		t.Errorf("segments during the outage: %d, want several", got)
	}
	waitFor(t, "a few retries", func() bool { return p.Stats().Retries >= 3 })
	sink.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pipeWants(n), sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("sink (-want +got):\n%s", diff)
	}
	if got := segmentCount(t, dir); got != 1 {
		t.Errorf("segments after recovery: %d, want 1", got)
	}
	if st := p.Stats(); st.Written != n || st.Pending != 0 || st.Lost != 0 {
		t.Errorf("Stats: Written %d, Pending %d, Lost %d; want %d, 0, 0", st.Written, st.Pending, st.Lost, n)
	}
}

func TestPipelineShutdownUnderLoad(t *testing.T) {
	const workers, perWorker = 4, 300
	for _, spool := range []bool{true, false} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			sink := NewMemorySink()
			cfg := PipelineConfig{Sinks: []Sink{sink}, Sealer: pipeSealer{}, BatchSize: 64}
			if spool {
				cfg.SpoolDir = t.TempDir()
			}
			p := newTestPipeline(t, cfg)
			var (
				mu       sync.Mutex
				accepted = map[string]bool{}
				closed   int64
				wg       sync.WaitGroup
				started  = make(chan struct{}, workers)
			)
			for w := range workers {
				wg.Go(func() {
					for i := range perWorker {
						tr := pipeTrace(w*perWorker + i)
						id := tr.ID
						err := p.Record(t.Context(), tr)
						if i == 10 {
							started <- struct{}{}
						}
						mu.Lock()
						switch {
						case err == nil:
							accepted[id] = true
						case errors.Is(err, ErrClosed):
							closed++
						default:
							t.Errorf("Record: %v", err)
						}
						mu.Unlock()
					}
				})
			}
			for range workers {
				<-started
			}
			if err := p.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			got := map[string]bool{}
			for _, tr := range sink.Traces() {
				got[tr.ID] = true
			}
			if diff := cmp.Diff(accepted, got); diff != "" {
				t.Errorf("stored IDs differ from the accepted ones (-want +got):\n%s", diff)
			}
			st := p.Stats()
			if st.LostClosed != closed || st.Lost != closed || st.Recorded != int64(len(accepted)) {
				t.Errorf("Stats: Lost %d, LostClosed %d, Recorded %d; want %d, %d, %d",
					st.Lost, st.LostClosed, st.Recorded, closed, closed, len(accepted))
			}
			if err := p.Shutdown(ctxT(t)); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
		})
	}
}

func TestPipelineStrict(t *testing.T) {
	dir := t.TempDir()
	syncing, unblock := make(chan struct{}, 1), make(chan struct{})
	var block atomic.Bool
	sink := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{
		Sinks: []Sink{sink}, Sealer: pipeSealer{}, Enrich: pipeEnrich, SpoolDir: dir, Strict: true,
		SyncInterval: time.Millisecond,
		beforeSync: func() {
			if block.Load() {
				syncing <- struct{}{}
				<-unblock
			}
		},
	})
	// Each Record returns only once its trace is in the file.
	for i := range 5 {
		if err := p.Record(t.Context(), pipeTrace(i)); err != nil {
			t.Fatal(err)
		}
		if ids := spooledIDs(t, dir); !slices.Contains(ids, pipeTrace(i).ID) {
			t.Fatalf("Record(%d) returned before its trace was in the spool; spool holds %v", i, ids)
		}
	}
	if st := p.Stats(); st.Spooled != 5 {
		t.Errorf("Spooled = %d, want 5", st.Spooled)
	}

	// A Record whose ctx ends before the fsync says so, and the trace is still kept.
	block.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Record(ctx, pipeTrace(5)) }()
	<-syncing
	cancel()
	if err := <-errc; !errors.Is(err, ErrNotDurable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Record with its ctx cancelled during the fsync: %v, want ErrNotDurable and context.Canceled", err)
	}
	block.Store(false)
	close(unblock)
	sink.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pipeWants(6), sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("sink (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.Lost != 0 {
		t.Errorf("Lost = %d, want 0", st.Lost)
	}
}

// spooledIDs reads every record in the spool directory the way replay does.
func spooledIDs(tb testing.TB, dir string) []string {
	tb.Helper()
	firsts, err := listSegments(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var segs []segment
	for _, first := range firsts {
		path := segPath(dir, first)
		fi, err := os.Stat(path)
		if err != nil {
			tb.Fatal(err)
		}
		segs = append(segs, segment{first: first, path: path, size: fi.Size(), last: 1<<63 - 1, count: 1})
	}
	var rd spoolReader
	defer rd.close()
	ts, _, _, err := rd.read(segs, 1, 1<<63, 1<<30, crcTable(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, t := range ts {
		ids = append(ids, t.ID)
	}
	return ids
}

func TestPipelineLoss(t *testing.T) {
	type result struct {
		Accepted, Failed int
		Stats            Stats
	}
	tests := []struct {
		name    string
		cfg     PipelineConfig
		n       int
		wantErr error
		check   func(t *testing.T, r result)
	}{{
		name:    "queue full",
		cfg:     PipelineConfig{MaxQueue: 4},
		n:       100,
		wantErr: ErrQueueFull,
		check: func(t *testing.T, r result) {
			// The writer holds one, the window 4 and the queue 4: the rest must fail.
			if r.Failed < 100-9 || r.Stats.LostQueueFull != int64(r.Failed) {
				t.Errorf("failed %d, LostQueueFull %d; want ≥ 91 and equal", r.Failed, r.Stats.LostQueueFull)
			}
		},
	}, {
		name:    "spool full, strict",
		cfg:     PipelineConfig{MaxSpoolBytes: 2000, Strict: true},
		n:       20,
		wantErr: ErrSpoolFull,
		check: func(t *testing.T, r result) {
			if r.Accepted == 0 || r.Failed == 0 || r.Stats.LostSpoolFull != int64(r.Failed) {
				t.Errorf("accepted %d, failed %d, LostSpoolFull %d; want some of each, failed = lost", r.Accepted, r.Failed, r.Stats.LostSpoolFull)
			}
		},
	}, {
		name: "spool full, async",
		cfg:  PipelineConfig{MaxSpoolBytes: 2000},
		n:    20,
		check: func(t *testing.T, r result) {
			if r.Failed != 0 || r.Stats.LostSpoolFull == 0 || r.Stats.LostSpoolFull+r.Stats.Spooled != 20 {
				t.Errorf("failed %d, LostSpoolFull %d, Spooled %d; want 0, > 0, summing to 20", r.Failed, r.Stats.LostSpoolFull, r.Stats.Spooled)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			sink := &blockSink{MemorySink: NewMemorySink(), release: make(chan struct{})}
			cfg := tt.cfg
			cfg.Sinks, cfg.Sealer = []Sink{sink}, pipeSealer{}
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			if cfg.MaxSpoolBytes != 0 {
				cfg.SpoolDir = t.TempDir()
			}
			p := newTestPipeline(t, cfg)
			var r result
			var accepted []string
			for i := range tt.n {
				tr := pipeTrace(i)
				tr.RequestBody = bytes.Repeat([]byte("x"), 300)
				id := tr.ID
				switch err := p.Record(t.Context(), tr); {
				case err == nil:
					r.Accepted++
					accepted = append(accepted, id)
				case errors.Is(err, tt.wantErr) && tt.wantErr != nil:
					r.Failed++
				default:
					t.Fatalf("Record(%d): %v", i, err)
				}
			}
			if cfg.SpoolDir != "" {
				waitFor(t, "the writer", func() bool { st := p.Stats(); return st.Spooled+st.LostSpoolFull == int64(tt.n) })
			}
			r.Stats = p.Stats()
			tt.check(t, r)
			if r.Stats.Lost == 0 || !strings.Contains(logs.String(), "traces lost") {
				t.Errorf("losses not counted (Lost %d) or not logged:\n%s", r.Stats.Lost, logs.String())
			}
			close(sink.release)
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			// Once the sink has everything, there is room again.
			tr := pipeTrace(tt.n)
			tr.RequestBody = bytes.Repeat([]byte("x"), 300)
			if err := p.Record(t.Context(), tr); err != nil {
				t.Errorf("Record once the sink caught up: %v", err)
			}
			accepted = append(accepted, pipeTrace(tt.n).ID)
			if err := p.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			st := p.Stats()
			if got := int64(len(sink.Traces())); got+st.Lost != int64(tt.n+1) {
				t.Errorf("stored %d + lost %d != recorded %d: something went missing silently", got, st.Lost, tt.n+1)
			}
			for _, tr := range sink.Traces() {
				if !slices.Contains(accepted, tr.ID) {
					t.Errorf("stored %s, whose Record failed", tr.ID)
				}
			}
			if err := p.Record(t.Context(), pipeTrace(tt.n+1)); !errors.Is(err, ErrClosed) {
				t.Errorf("Record after Shutdown: %v, want ErrClosed", err)
			}
			if got := p.Stats().LostClosed; got != 1 {
				t.Errorf("LostClosed = %d, want 1", got)
			}
		})
	}
}

func TestPipelineWriteTimeout(t *testing.T) {
	var logs syncBuffer
	sink := &blockSink{MemorySink: NewMemorySink(), release: make(chan struct{})}
	p := newTestPipeline(t, PipelineConfig{
		Sinks: []Sink{sink}, SpoolDir: t.TempDir(), WriteTimeout: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	recordAll(t, p, 0, 3)
	waitFor(t, "retries after timeouts", func() bool { return p.Stats().Retries >= 2 })
	if !strings.Contains(logs.String(), "WriteTimeout") {
		t.Errorf("the retry log does not name the timeout:\n%s", logs.String())
	}
	close(sink.release)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := len(sink.Traces()); got != 3 {
		t.Errorf("stored %d traces, want 3", got)
	}
}

type failingSealer struct{}

func (failingSealer) Seal(string, string, []byte) ([]byte, int, error) {
	return nil, 0, errors.New("no key")
}

func TestPipelineBodies(t *testing.T) {
	tests := []struct {
		name           string
		sealer         Sealer
		wantSealErrors int64
	}{
		{name: "no sealer drops bodies"},
		{name: "failing sealer drops bodies, keeps traces", sealer: failingSealer{}, wantSealErrors: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink, dir := NewMemorySink(), t.TempDir()
			p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, Sealer: tt.sealer, SpoolDir: dir})
			recordAll(t, p, 0, 3)
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			var want []*Trace
			for i := range 3 {
				tr := pipeTrace(i)
				tr.RequestBody, tr.ResponseBody = nil, nil
				want = append(want, tr)
			}
			if diff := cmp.Diff(want, sortedByID(sink.Traces()), exactBytes); diff != "" {
				t.Errorf("sink (-want +got):\n%s", diff)
			}
			if bytes.Contains(spoolBytesOnDisk(t, dir), []byte("secret")) {
				t.Error("plaintext reached the spool")
			}
			if got := p.Stats().SealErrors; got != tt.wantSealErrors {
				t.Errorf("SealErrors = %d, want %d", got, tt.wantSealErrors)
			}
		})
	}
}

func TestNewPipelineErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  PipelineConfig
	}{
		{name: "no sinks", cfg: PipelineConfig{}},
		{name: "nil sink", cfg: PipelineConfig{Sinks: []Sink{nil}}},
		{name: "strict without spool", cfg: PipelineConfig{Sinks: []Sink{NewMemorySink()}, Strict: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPipeline(tt.cfg); err == nil {
				t.Error("NewPipeline succeeded")
			}
		})
	}
}

func ExampleNewPipeline() {
	dir, err := os.MkdirTemp("", "loom-spool")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sink := NewMemorySink()
	p, err := NewPipeline(PipelineConfig{
		Sinks:    []Sink{sink},
		Sealer:   pipeSealer{}, // in the gateway: the crypto package's keyring
		SpoolDir: dir,
	})
	if err != nil {
		panic(err)
	}
	p.Record(context.Background(), &Trace{ID: "0190a000-0000-7000-8000-000000000001", TenantID: "t1",
		RequestBody: []byte(`{"model":"gpt-4o-mini"}`)})
	if err := p.Shutdown(context.Background()); err != nil {
		panic(err)
	}
	tr := sink.Traces()[0]
	fmt.Println(len(sink.Traces()), tr.RequestBody == nil, len(tr.SealedRequest) > 0)
	// Output: 1 true true
}

func BenchmarkRecord(b *testing.B) {
	for _, spool := range []bool{true, false} {
		b.Run(fmt.Sprintf("spool=%v", spool), func(b *testing.B) {
			cfg := PipelineConfig{Sinks: []Sink{&countSink{}}}
			if spool {
				cfg.SpoolDir = b.TempDir()
			}
			p := newTestPipeline(b, cfg)
			// The pipeline writes nothing into a trace without bodies, Sealer or Enrich, so
			// one trace can be handed over again and again: this measures only Record.
			tr := pipeTrace(0)
			tr.RequestBody, tr.ResponseBody = nil, nil
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%4096 == 0 {
					// A tight loop outruns the writer; let it catch up off the clock, so
					// that this measures accepted hand-offs, not ErrQueueFull.
					b.StopTimer()
					waitQueue(p, 0)
					b.StartTimer()
				}
				p.Record(ctx, tr)
			}
			b.StopTimer()
			st := p.Stats()
			b.ReportMetric(float64(st.LostQueueFull)/float64(b.N), "lost/op")
		})
	}
}

// aesSealer seals like the crypto package does: AES-256-GCM with a random nonce.
type aesSealer struct{ aead cipher.AEAD }

func (s aesSealer) Seal(tenantID, traceID string, plaintext []byte) ([]byte, int, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plaintext, []byte(tenantID+"\x00"+traceID)), 1, nil
}

func BenchmarkPipelineThroughput(b *testing.B) {
	block, _ := aes.NewCipher(make([]byte, 32))
	aead, _ := cipher.NewGCM(block)
	sink := NewMemorySink()
	p := newTestPipeline(b, PipelineConfig{
		Sinks: []Sink{sink}, Sealer: aesSealer{aead}, Enrich: pipeEnrich,
		SpoolDir: b.TempDir(), FlushInterval: 200 * time.Millisecond,
	})
	req, resp := bytes.Repeat([]byte("q"), 1024), bytes.Repeat([]byte("a"), 2048)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tr := pipeTrace(i)
		tr.RequestBody, tr.ResponseBody = req, resp
		if i%1024 == 0 {
			waitQueue(p, cap(p.in)/2) // back-pressure instead of ErrQueueFull
		}
		if err := p.Record(ctx, tr); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := p.ForceFlush(ctxT(b)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := len(sink.Traces()); got != i {
		b.Fatalf("sink has %d traces, want %d", got, i)
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "traces/s")
}

// waitQueue waits until at most n traces wait in front of the spool writer.
func waitQueue(p *Pipeline, n int) {
	for len(p.in) > n {
		time.Sleep(50 * time.Microsecond)
	}
}
