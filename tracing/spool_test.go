package tracing

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

func TestSpoolEncoding(t *testing.T) {
	zero := int64(0)
	big := int64(math.MaxInt64)
	tests := []struct {
		name string
		t    *Trace
	}{
		{name: "zero", t: &Trace{}},
		{name: "full", t: pipeWant(3)},
		{name: "edges", t: &Trace{
			ID:               "ünïcödé-\x00-id",
			CreatedAt:        time.Date(1969, 7, 20, 20, 17, 40, 123456789, time.UTC),
			Status:           -1,
			UpstreamRetries:  2,
			PromptTokens:     math.MaxInt64,
			CompletionTokens: math.MinInt64,
			CostMicroUSD:     &zero,
			UsageSource:      UsageMissing,
			SealedRequest:    []byte{},
			SealedResponse:   bytes.Repeat([]byte{0xff}, 300),
			KeyVersion:       math.MaxInt32,
			Stream:           true, ClientAborted: true, ResponseTruncated: true,
			W3CTraceID: "4bf92f3577b34da6a3ce929d0e0e4736", W3CSpanID: "00f067aa0ba902b7",
			W3CParentSpanID: "b7ad6b7169203331", W3CTraceState: "vendor=abc",
			FinishReasons: []string{"stop", "", "ünï\x00"},
		}},
		{name: "trace state only", t: &Trace{ID: "x", W3CTraceState: "k=v"}},
		{name: "finish reasons only", t: &Trace{ID: "x", FinishReasons: []string{"length"}}},
		{name: "cost max", t: &Trace{ID: "x", CostMicroUSD: &big, UsageSource: UsageEstimated}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := appendTrace(nil, 42, tt.t)
			if got := payloadSeq(p); got != 42 {
				t.Errorf("seq = %d, want 42", got)
			}
			got, err := decodeTrace(p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.t, got, exactBytes); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			for n := range len(p) {
				if _, err := decodeTrace(p[:n]); err == nil {
					t.Fatalf("a %d-byte prefix of a %d-byte record decoded", n, len(p))
				}
			}
		})
	}
}

func TestSpoolPlaintextNeverEncoded(t *testing.T) {
	tr := pipeTrace(1) // bodies still set, as if a caller skipped sealing
	if p := appendTrace(nil, 1, tr); bytes.Contains(p, []byte("secret")) {
		t.Error("the encoding holds plaintext bodies")
	}
}

// spoolFixture leaves a spool in dir holding traces 0..n-1, none acknowledged.
// Small segmentBytes spread them over several segments.
func spoolFixture(t *testing.T, dir string, n int, segmentBytes int64) {
	t.Helper()
	p := newTestPipeline(t, PipelineConfig{
		Sinks: []Sink{newFlakySink(true)}, Sealer: pipeSealer{}, Enrich: pipeEnrich, SpoolDir: dir,
		segmentBytes: segmentBytes,
	})
	recordAll(t, p, 0, n)
	waitFor(t, "everything spooled", func() bool { return p.Stats().Spooled == int64(n) })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p.Shutdown(ctx) // gives up at once: everything stays in the spool
}

// lastSegment returns the path of the newest segment holding records.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	firsts, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(firsts) - 1; i >= 0; i-- {
		path := segPath(dir, firsts[i])
		if fi, err := os.Stat(path); err == nil && fi.Size() > segHeaderLen {
			return path
		}
	}
	t.Fatal("no segment with records")
	return ""
}

func TestSpoolTornTail(t *testing.T) {
	const n = 50
	tests := []struct {
		name        string
		damage      func(b []byte) []byte
		wantN       int
		wantCorrupt int64
	}{
		{name: "intact", damage: func(b []byte) []byte { return b }, wantN: n},
		{name: "last record cut short", damage: func(b []byte) []byte { return b[:len(b)-3] }, wantN: n - 1, wantCorrupt: 1},
		{name: "half a record header", damage: func(b []byte) []byte { return append(b, 0x20, 0, 0) }, wantN: n, wantCorrupt: 1},
		{name: "garbage appended", damage: func(b []byte) []byte { return append(b, bytes.Repeat([]byte("garbage!"), 40)...) }, wantN: n, wantCorrupt: 1},
		{name: "zeros appended", damage: func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, wantN: n, wantCorrupt: 1},
		{name: "last record flipped", damage: func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, wantN: n - 1, wantCorrupt: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			spoolFixture(t, dir, n, 0)
			path := lastSegment(t, dir)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}

			sink := NewMemorySink()
			p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir})
			// Replay cut the damage off the file: a second look finds nothing to cut.
			if _, _, rep, err := scanSegment(path, 1, nil, 0, crcTable()); err != nil || rep != (repair{}) {
				t.Errorf("after replay: repair %+v, err %v; want none", rep, err)
			}
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(pipeWants(tt.wantN), sortedByID(sink.Traces()), exactBytes); diff != "" {
				t.Errorf("replayed (-want +got):\n%s", diff)
			}
			st := p.Stats()
			if st.Replayed != int64(tt.wantN) || st.LostCorrupt != tt.wantCorrupt || st.Written != int64(tt.wantN) {
				t.Errorf("Stats: Replayed %d, LostCorrupt %d, Written %d; want %d, %d, %d",
					st.Replayed, st.LostCorrupt, st.Written, tt.wantN, tt.wantCorrupt, tt.wantN)
			}
		})
	}
}

// TestSpoolResume: after an unclean stop, a restart re-delivers what the sinks had not
// acknowledged, and new traces continue the sequence.
func TestSpoolResume(t *testing.T) {
	for _, segBytes := range []int64{0, 2 << 10} {
		t.Run(fmt.Sprintf("segmentBytes=%d", segBytes), func(t *testing.T) {
			dir := t.TempDir()
			spoolFixture(t, dir, 20, segBytes)
			sink := NewMemorySink()
			p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, Sealer: pipeSealer{}, Enrich: pipeEnrich,
				SpoolDir: dir, segmentBytes: segBytes, BatchSize: 3})
			recordAll(t, p, 20, 30)
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(pipeWants(30), sortedByID(sink.Traces()), exactBytes); diff != "" {
				t.Errorf("sink (-want +got):\n%s", diff)
			}
			if st := p.Stats(); st.Replayed != 20 || st.Recorded != 10 || st.Written != 30 || st.Pending != 0 {
				t.Errorf("Stats: Replayed %d, Recorded %d, Written %d, Pending %d; want 20, 10, 30, 0",
					st.Replayed, st.Recorded, st.Written, st.Pending)
			}
		})
	}
}

// TestSpoolTornMiddle: damage in an older segment cuts only the damaged record; the
// shippers step over the gap.
func TestSpoolTornMiddle(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	spoolFixture(t, dir, n, 2<<10)
	firsts, err := listSegments(dir)
	if err != nil || len(firsts) < 3 {
		t.Fatalf("segments %v, err %v; want at least 3", firsts, err)
	}
	path := segPath(dir, firsts[0])
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	sink := NewMemorySink()
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir, BatchSize: 4})
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got := sortedByID(sink.Traces())
	var want []*Trace
	for i := range n {
		if w := pipeWant(i); slices.ContainsFunc(got, func(g *Trace) bool { return g.ID == w.ID }) {
			want = append(want, w)
		}
	}
	if diff := cmp.Diff(want, got, exactBytes); diff != "" {
		t.Errorf("replayed (-want +got):\n%s", diff)
	}
	if st := p.Stats(); len(got) != n-1 || st.LostCorrupt != 1 || st.Written != n-1 || st.Pending != 0 {
		t.Errorf("got %d traces, Stats %+v; want %d, LostCorrupt 1, Written %d, Pending 0", len(got), st, n-1, n-1)
	}
}

const crashN = 300

// TestHelperProcess is the child of TestPipelineCrash: it spools crashN traces that its
// sink never takes, says "ready" once the group commit covered them, and waits to be
// killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("LOOM_TRACING_CRASH_SPOOL")
	if dir == "" {
		t.Skip("helper process of TestPipelineCrash")
	}
	p, err := NewPipeline(PipelineConfig{
		Sinks: []Sink{newFlakySink(true)}, Sealer: pipeSealer{}, Enrich: pipeEnrich, SpoolDir: dir,
		retryMin: time.Millisecond, retryMax: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	recordAll(t, p, 0, crashN)
	waitFor(t, "the group commit", func() bool { return p.Stats().Spooled == crashN })
	fmt.Println("ready")
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

func TestPipelineCrash(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.CommandContext(ctxT(t), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LOOM_TRACING_CRASH_SPOOL="+dir)
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

	sink := NewMemorySink()
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir})
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pipeWants(crashN), sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("after the crash (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.Replayed != crashN || st.Written != crashN || st.Lost != 0 {
		t.Errorf("Stats: Replayed %d, Written %d, Lost %d; want %d, %d, 0", st.Replayed, st.Written, st.Lost, crashN, crashN)
	}
}

// exactBytes compares byte slices fast (cmp's element-wise walk is slow under -race) and
// still tells nil from empty.
var exactBytes = cmp.Comparer(func(a, b []byte) bool {
	return bytes.Equal(a, b) && (a == nil) == (b == nil)
})

// recordOffsets returns the offset of every record in a segment file's bytes.
func recordOffsets(b []byte) []int {
	var offs []int
	for off := int(segHeaderLen); off+recHeaderLen <= len(b); {
		offs = append(offs, off)
		off += recHeaderLen + int(binary.LittleEndian.Uint32(b[off:]))
	}
	return offs
}

// TestSpoolCorruptMiddle: one damaged record in the middle of a segment costs only that
// record: replay resynchronises on the next one, counts exactly the records lost, and keeps
// the damaged bytes aside.
func TestSpoolCorruptMiddle(t *testing.T) {
	const n = 1000
	tests := []struct {
		name     string
		segBytes int64
		// damage changes the bytes of the segment holding record index at
		// record offsets offs, and returns the trace indexes it destroyed.
		damage func(b []byte, offs []int) []int
	}{
		{name: "payload byte flipped", damage: func(b []byte, offs []int) []int {
			b[offs[10]+recHeaderLen+20] ^= 0x40
			return []int{10}
		}},
		{name: "length flipped", damage: func(b []byte, offs []int) []int {
			b[offs[10]+1] ^= 0x01
			return []int{10}
		}},
		{name: "checksum flipped", damage: func(b []byte, offs []int) []int {
			b[offs[10]+5] ^= 0x80
			return []int{10}
		}},
		{name: "two records overwritten", damage: func(b []byte, offs []int) []int {
			copy(b[offs[10]:offs[12]], bytes.Repeat([]byte{0xAB}, offs[12]-offs[10]))
			return []int{10, 11}
		}},
		{name: "older segment", segBytes: 16 << 10, damage: func(b []byte, offs []int) []int {
			b[offs[10]+recHeaderLen+3] ^= 0xff
			return []int{10}
		}},
		{name: "older segment's tail", segBytes: 16 << 10, damage: func(b []byte, offs []int) []int {
			last := len(offs) - 1
			b[offs[last]+recHeaderLen+3] ^= 0xff
			return []int{last}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			spoolFixture(t, dir, n, tt.segBytes)
			firsts, err := listSegments(dir)
			if err != nil {
				t.Fatal(err)
			}
			path := segPath(dir, firsts[0])
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			orig := slices.Clone(b)
			offs := recordOffsets(b)
			destroyed := tt.damage(b, offs)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}

			sink := NewMemorySink()
			p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir})
			if err := p.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			var want []*Trace
			for i := range n {
				if !slices.Contains(destroyed, i) {
					want = append(want, pipeWant(i))
				}
			}
			if diff := cmp.Diff(want, sortedByID(sink.Traces()), exactBytes); diff != "" {
				t.Errorf("replayed (-want +got):\n%s", diff)
			}
			st := p.Stats()
			if st.LostCorrupt != int64(len(destroyed)) || st.Lost != int64(len(destroyed)) || st.Written != int64(n-len(destroyed)) {
				t.Errorf("Stats: LostCorrupt %d, Lost %d, Written %d; want %d, %d, %d",
					st.LostCorrupt, st.Lost, st.Written, len(destroyed), len(destroyed), n-len(destroyed))
			}
			// The damaged bytes are kept aside, exactly those of the records destroyed.
			kept, err := os.ReadFile(path + corruptExt)
			if err != nil {
				t.Fatal(err)
			}
			lo := offs[destroyed[0]]
			hi := len(b)
			if last := destroyed[len(destroyed)-1]; last+1 < len(offs) {
				hi = offs[last+1]
			}
			if diff := cmp.Diff(b[lo:hi], kept); diff != "" || bytes.Equal(orig[lo:hi], kept) {
				t.Errorf(".corrupt file holds %d bytes, want the %d damaged ones", len(kept), hi-lo)
			}
			if fi, err := os.Stat(path + corruptExt); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf(".corrupt file: %v, want mode 0600", err)
			}
		})
	}
}

// TestSpoolFileModes: everything the pipeline writes into the spool directory (segments,
// the cursor, the dead-letter file) is readable by its owner only, whatever the umask.
func TestSpoolFileModes(t *testing.T) {
	dir := t.TempDir()
	spoolFixture(t, dir, 20, 1<<10)
	if err := appendDeadLetter(dir, pipeWant(1), "refused", crcTable()); err != nil {
		t.Fatal(err)
	}
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{newFlakySink(true)}, SpoolDir: dir}) // replays, starts a segment
	defer func() {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		p.Shutdown(ctx)
	}()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if !slices.Contains(names, cursorName) || !slices.Contains(names, deadLetterName) || segmentCount(t, dir) < 2 {
		t.Errorf("spool directory holds %v; the test expects segments, the cursor and the dead-letter file", names)
	}
}

// TestSpoolDamagedWhileShipping: a record damaged after replay verified the segment (a
// disk going bad under a running pipeline) costs only that record; the shipper goes on
// with the next valid one.
func TestSpoolDamagedWhileShipping(t *testing.T) {
	const n, bad = 100, 80
	dir := t.TempDir()
	body := bytes.Repeat([]byte("b"), 2<<10) // 100 records: more than a reader's buffer
	first := newTestPipeline(t, PipelineConfig{Sinks: []Sink{newFlakySink(true)}, SpoolDir: dir})
	for i := range n {
		tr := pipeWant(i)
		tr.SealedRequest = body
		if err := first.Record(t.Context(), tr); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "everything spooled", func() bool { return first.Stats().Spooled == n })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	first.Shutdown(ctx)

	sink := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir, BatchSize: 5})
	waitFor(t, "the first batch offered", func() bool { return p.Stats().Retries > 0 })
	path := lastSegment(t, dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[recordOffsets(b)[bad]+recHeaderLen+30] ^= 0x10
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sink.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range n {
		if i != bad {
			want = append(want, pipeTrace(i).ID)
		}
	}
	var got []string
	for _, tr := range sortedByID(sink.Traces()) {
		got = append(got, tr.ID)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.LostCorrupt != 1 || st.Lost != 1 {
		t.Errorf("Stats: LostCorrupt %d, Lost %d; want 1, 1", st.LostCorrupt, st.Lost)
	}
}
