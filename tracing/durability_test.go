package tracing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPipelineShutdownSpentContext: a Shutdown whose ctx has already ended still drains the
// queue into the spool, so a healthy disk keeps every trace for the next start.
func TestPipelineShutdownSpentContext(t *testing.T) {
	const n = 5000
	dir := t.TempDir()
	stuck := &blockSink{MemorySink: NewMemorySink(), release: make(chan struct{})}
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{stuck}, SpoolDir: dir, Sealer: pipeSealer{}, Enrich: pipeEnrich})
	recordAll(t, p, 0, n)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Shutdown(ctx); err == nil {
		t.Error("Shutdown with a spent ctx and a stuck sink returned nil")
	}
	if st := p.Stats(); st.Lost != 0 || st.Spooled != n {
		t.Errorf("Stats %+v; want all %d spooled, none lost", st, n)
	}
	sink := NewMemorySink()
	p2 := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir})
	if err := p2.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pipeWants(n), sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("after the restart (-want +got):\n%s", diff)
	}
}

// lineSink appends each trace's ID as a line to a file, fsynced, and never dedupes, so a
// test can count every delivery, across processes.
type lineSink struct {
	mu sync.Mutex
	f  *os.File
}

func openLineSink(tb testing.TB, path string) *lineSink {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	return &lineSink{f: f}
}

func (s *lineSink) WriteBatch(ctx context.Context, batch []*Trace) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for _, t := range batch {
		b = append(append(b, t.ID...), '\n')
	}
	if _, err := s.f.Write(b); err != nil {
		return err
	}
	return s.f.Sync()
}

func (s *lineSink) Shutdown(context.Context) error { return nil }

// linesOf counts each line of the file at path.
func linesOf(tb testing.TB, path string) map[string]int {
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n := map[string]int{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l != "" {
			n[l]++
		}
	}
	return n
}

// TestHelperTwoSinks is the child of TestPipelineCrashPerSinkPositions: a fast sink takes
// every trace, a slow one none; it says "ready" once the fast sink's position is saved,
// and waits to be killed.
func TestHelperTwoSinks(t *testing.T) {
	dir := os.Getenv("LOOM_TRACING_TWO_SINKS")
	if dir == "" {
		t.Skip("helper process of TestPipelineCrashPerSinkPositions")
	}
	fast := openLineSink(t, filepath.Join(dir, "fast.lines"))
	p, err := NewPipeline(PipelineConfig{
		Sinks: []Sink{fast, newFlakySink(true)}, Sealer: pipeSealer{}, Enrich: pipeEnrich,
		SpoolDir: filepath.Join(dir, "spool"), FlushInterval: time.Millisecond,
		retryMin: time.Millisecond, retryMax: 10 * time.Millisecond, cursorInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	recordAll(t, p, 0, crashN)
	waitFor(t, "the fast sink's position saved", func() bool {
		acks, err := readCursor(filepath.Join(dir, "spool"), crcTable())
		return err == nil && len(acks) == 2 && acks[0] == crashN
	})
	fmt.Println("ready")
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

// TestPipelineCrashPerSinkPositions: after a crash, each sink is re-sent only what it had
// not acknowledged by the last saved position: the fast sink nothing, the slow one all.
func TestPipelineCrashPerSinkPositions(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.CommandContext(ctxT(t), os.Args[0], "-test.run=^TestHelperTwoSinks$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LOOM_TRACING_TWO_SINKS="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	if !ready {
		cmd.Wait()
		t.Fatalf("child never got ready; stderr:\n%s", stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred cleanup runs
		t.Fatal(err)
	}
	cmd.Wait()

	fastPath := filepath.Join(dir, "fast.lines")
	slow := NewMemorySink()
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{openLineSink(t, fastPath), slow}, SpoolDir: filepath.Join(dir, "spool")})
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pipeWants(crashN), sortedByID(slow.Traces()), exactBytes); diff != "" {
		t.Errorf("slow sink after the crash (-want +got):\n%s", diff)
	}
	want := map[string]int{}
	for i := range crashN {
		want[pipeTrace(i).ID] = 1
	}
	if diff := cmp.Diff(want, linesOf(t, fastPath)); diff != "" {
		t.Errorf("fast sink deliveries, each trace once (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.Replayed != crashN || st.Written != crashN || st.Lost != 0 {
		t.Errorf("Stats: Replayed %d, Written %d, Lost %d; want %d, %d, 0", st.Replayed, st.Written, st.Lost, crashN, crashN)
	}
}

// TestPipelineLaggingSinkSpoolFull: with one sink down and the spool full, that sink's
// oldest backlog is dropped and counted as its loss; the healthy sink gets every trace and
// no new trace is lost.
func TestPipelineLaggingSinkSpoolFull(t *testing.T) {
	const n = 2000 // about 500 KiB of records: many times the spool
	healthy := NewMemorySink()
	down := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{healthy, down}, SpoolDir: t.TempDir(),
		Sealer: pipeSealer{}, Enrich: pipeEnrich, MaxSpoolBytes: 32 << 10, segmentBytes: 4 << 10, BatchSize: 16, hotMax: 16})
	// In steps the healthy sink keeps up with, so that only the other one lags.
	for i := 0; i < n; i += 50 {
		recordAll(t, p, i, i+50)
		waitFor(t, "the healthy sink to keep up", func() bool { return len(healthy.Traces()) == i+50 })
	}
	st := p.Stats()
	if st.LostLagging == 0 || st.LostSpoolFull != 0 || st.Lost != st.LostLagging {
		t.Errorf("Stats %+v; want the lagging sink's backlog counted lost, and nothing else", st)
	}
	down.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	if got, want := int64(len(down.Traces())), n-st.LostLagging; got != want {
		t.Errorf("the sink that was down has %d traces, want %d (all but the %d counted lost)", got, want, st.LostLagging)
	}
	if diff := cmp.Diff(pipeWants(n), sortedByID(healthy.Traces()), exactBytes); diff != "" {
		t.Errorf("healthy sink (-want +got):\n%s", diff)
	}
}

// TestPipelineMemoryBudget: without a spool, a sink outage fills the in-memory queue and
// window only up to MaxMemoryBytes; what does not fit is counted lost, and what was
// accepted is delivered once the sink is back.
func TestPipelineMemoryBudget(t *testing.T) {
	const (
		n      = 1000
		body   = 64 << 10
		budget = 2 << 20
	)
	sink := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, Sealer: pipeSealer{}, MaxMemoryBytes: budget, BatchSize: 8})
	big := bytes.Repeat([]byte("x"), body)
	var accepted int64
	for i := range n {
		tr := pipeTrace(i)
		tr.RequestBody = big
		switch err := p.Record(t.Context(), tr); {
		case err == nil:
			accepted++
		case !errors.Is(err, ErrQueueFull):
			t.Fatalf("Record: %v", err)
		}
		if held := p.Stats().MemoryBytes; held > budget {
			t.Fatalf("after %d traces, %d bytes held, over the %d budget", i+1, held, budget)
		}
	}
	if most := int64(budget / body); accepted > most || accepted == 0 {
		t.Errorf("accepted %d traces of %d KiB bodies, want some and at most %d", accepted, body>>10, most)
	}
	sink.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if int64(len(sink.Traces())) != accepted || st.LostQueueFull != n-accepted || st.MemoryBytes != 0 {
		t.Errorf("sink has %d traces, Stats %+v; want %d delivered, %d lost as queue full, nothing held",
			len(sink.Traces()), st, accepted, n-accepted)
	}
}

// slowSink delays each batch before passing it on.
type slowSink struct {
	Sink
	delay time.Duration
}

func (s slowSink) WriteBatch(ctx context.Context, batch []*Trace) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Sink.WriteBatch(ctx, batch)
}

// TestHelperCrashLoop is the child of TestPipelineCrashLoop: a strict pipeline with a fast
// and a slow sink records traces from LOOM_TRACING_LOOP_BASE on and prints the index of
// each one whose Record returned nil, until it is killed.
func TestHelperCrashLoop(t *testing.T) {
	dir := os.Getenv("LOOM_TRACING_LOOP_DIR")
	if dir == "" {
		t.Skip("helper process of TestPipelineCrashLoop")
	}
	var base int
	fmt.Sscan(os.Getenv("LOOM_TRACING_LOOP_BASE"), &base)
	p, err := NewPipeline(PipelineConfig{
		Sinks: []Sink{openLineSink(t, filepath.Join(dir, "fast.lines")),
			slowSink{openLineSink(t, filepath.Join(dir, "slow.lines")), 3 * time.Millisecond}},
		SpoolDir: filepath.Join(dir, "spool"), Strict: true, BatchSize: 16, FlushInterval: time.Millisecond,
		cursorInterval: 10 * time.Millisecond, segmentBytes: 8 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := base; ; i++ {
		if err := p.Record(t.Context(), pipeTrace(i)); err != nil {
			t.Fatalf("Record(%d): %v", i, err)
		}
		fmt.Fprintln(w, i)
		w.Flush()
	}
}

// TestPipelineCrashLoop: a strict pipeline killed (SIGKILL) at random points, again and
// again, loses no trace whose Record returned nil, in either of its two sinks.
func TestPipelineCrashLoop(t *testing.T) {
	dir := t.TempDir()
	var acked []int
	base := 0
	for round := range 6 {
		cmd := exec.CommandContext(ctxT(t), os.Args[0], "-test.run=^TestHelperCrashLoop$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LOOM_TRACING_LOOP_DIR="+dir, fmt.Sprintf("LOOM_TRACING_LOOP_BASE=%d", base))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := 50 + rand.IntN(400) // kill after this many acknowledged traces
		sc := bufio.NewScanner(out)
		for got := 0; got < want && sc.Scan(); got++ {
			var i int
			if _, err := fmt.Sscan(sc.Text(), &i); err != nil {
				continue // test framework output
			}
			acked = append(acked, i)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if len(acked) == 0 {
			t.Fatalf("round %d: child acknowledged nothing; stderr:\n%s", round, stderr.String())
		}
		base = acked[len(acked)-1] + 100_000 // ids never reused
	}

	fast, slow := filepath.Join(dir, "fast.lines"), filepath.Join(dir, "slow.lines")
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{openLineSink(t, fast), openLineSink(t, slow)},
		SpoolDir: filepath.Join(dir, "spool")})
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fast, slow} {
		lines := linesOf(t, path)
		var missing []int
		dups := 0
		for _, i := range acked {
			if lines[pipeTrace(i).ID] == 0 {
				missing = append(missing, i)
			}
		}
		for _, n := range lines {
			dups += n - 1
		}
		if len(missing) > 0 {
			t.Errorf("%s: %d acknowledged traces missing, first %v", filepath.Base(path), len(missing), missing[:min(5, len(missing))])
		}
		t.Logf("%s: %d acknowledged traces, %d lines, %d re-deliveries", filepath.Base(path), len(acked), len(lines)+dups, dups)
	}
}
