package tracing

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// oldSpoolTrace varies the optional parts of the i-th test trace the way the golden
// spool in testdata was written: W3C fields on even traces, retries on the fourth, a
// service tier on the sixth.
func oldSpoolTrace(t *Trace, i int) *Trace {
	if i%2 == 0 {
		t.W3CTraceID, t.W3CSpanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		t.W3CParentSpanID, t.W3CTraceState = "b7ad6b7169203331", "vendor=abc"
	}
	if i == 3 {
		t.UpstreamRetries = 2
	}
	if i == 5 {
		t.ServiceTier, t.CacheWrite5mTokens = "flex", 9
	}
	return t
}

// TestSpoolBeforeFinishReasons replays a segment that the build before finish reasons
// wrote (testdata/spool-before-finish-reasons.seg: oldSpoolTrace(pipeTrace(i), i) for i
// in 0..5, recorded through a Pipeline with pipeSealer and pipeEnrich and never shipped).
// Every trace comes out whole, without finish reasons, and a record of this build with
// finish reasons replays from the same spool after it.
func TestSpoolBeforeFinishReasons(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "spool-before-finish-reasons.seg"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(segPath(dir, 1), old, 0o600); err != nil {
		t.Fatal(err)
	}
	var want []*Trace
	for i := range 6 {
		w := oldSpoolTrace(pipeWant(i), i)
		want = append(want, w)
	}
	sink := NewMemorySink()
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, Sealer: pipeSealer{}, Enrich: pipeEnrich, SpoolDir: dir})
	waitFor(t, "the old spool replayed", func() bool { return len(sink.Traces()) == len(want) })
	if diff := cmp.Diff(want, sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("old spool (-want +got):\n%s", diff)
	}

	tr := pipeTrace(6)
	tr.FinishReasons = []string{"tool_calls", "stop"}
	if err := p.Record(t.Context(), tr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new record", func() bool { return len(sink.Traces()) == len(want)+1 })
	nw := pipeWant(6)
	nw.FinishReasons = []string{"tool_calls", "stop"}
	if diff := cmp.Diff(nw, sortedByID(sink.Traces())[6], exactBytes); diff != "" {
		t.Errorf("new record after the old ones (-want +got):\n%s", diff)
	}
}
