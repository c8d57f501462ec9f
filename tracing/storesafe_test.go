package tracing

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestStoreSafe(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		limit  int
		want   string
		wantOK bool
	}{
		{name: "plain", in: "gpt-4o-mini", limit: 256, want: "gpt-4o-mini", wantOK: true},
		{name: "empty", in: "", limit: 8, want: "", wantOK: true},
		{name: "unicode kept", in: "modèle-Ω", limit: 256, want: "modèle-Ω", wantOK: true},
		{name: "NUL", in: "gpt-4o-mini\x00x", limit: 256, want: "gpt-4o-mini\uFFFDx"},
		{name: "invalid UTF-8", in: "a\xff\xfeb\xc3", limit: 256, want: "a\uFFFDb\uFFFD"},
		{name: "cut", in: strings.Repeat("a", 300), limit: 256, want: strings.Repeat("a", 256)},
		{name: "cut at a character boundary", in: "aaΩΩ", limit: 5, want: "aaΩ"},
		{name: "replacement then cut", in: "\x00\x00\x00", limit: 4, want: "\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := storeSafe(tt.in, tt.limit)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("storeSafe(%q) (-want +got):\n%s", tt.in, diff)
			}
			if ok != tt.wantOK {
				t.Errorf("storeSafe(%q) ok = %v, want %v", tt.in, ok, tt.wantOK)
			}
		})
	}
}

func TestStoreSafeFinishReasons(t *testing.T) {
	many := make([]string, 20)
	for i := range many {
		many[i] = string(rune('a' + i))
	}
	long := strings.Repeat("x", MaxFinishReasonBytes)
	tests := []struct {
		name   string
		in     []string
		want   []string
		wantOK bool
	}{
		{name: "none", in: nil, want: nil, wantOK: true},
		{name: "clean", in: []string{"stop", "length"}, want: []string{"stop", "length"}, wantOK: true},
		{name: "NUL and invalid UTF-8", in: []string{"st\x00op", "\xffl"}, want: []string{"st\uFFFDop", "\uFFFDl"}},
		{name: "cut", in: []string{long + "yz"}, want: []string{long}},
		{name: "equal once cut", in: []string{long + "1", "stop", long + "2"}, want: []string{long, "stop"}},
		{name: "empty dropped", in: []string{"", "stop"}, want: []string{"stop"}},
		{name: "duplicates", in: []string{"stop", "stop"}, want: []string{"stop"}},
		{name: "too many: the first", in: many, want: many[:MaxFinishReasons]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Trace{FinishReasons: tt.in}
			makeStoreSafe(tr)
			if diff := cmp.Diff(tt.want, tr.FinishReasons); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if tr.FieldsCut == tt.wantOK {
				t.Errorf("FieldsCut = %v, want %v", tr.FieldsCut, !tt.wantOK)
			}
		})
	}
}

// TestPipelineStoreSafe: the pipeline hands every sink, custom ones included, text fields
// that are valid UTF-8, NUL-free and within their maximum, marked when changed; the bodies
// stay exact.
func TestPipelineStoreSafe(t *testing.T) {
	sink := NewMemorySink()
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: t.TempDir(), Sealer: pipeSealer{}})
	hostile := pipeTrace(1)
	hostile.Model = "gpt-4o-mini\x00x"
	hostile.RequestID = "\xff" + strings.Repeat("r", 1000)
	hostile.ServedModel = "served\xc3"
	hostile.ErrorType = strings.Repeat("e", MaxErrorTypeBytes+1)
	hostile.Provider = "p\x00"
	hostile.FinishReasons = []string{"stop\xff", strings.Repeat("f", 1<<20)}
	hostile.RequestBody = []byte("body\x00\xff kept exactly")
	clean := pipeTrace(2)
	for _, tr := range []*Trace{hostile, clean} {
		if err := p.Record(ctxT(t), tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	wantHostile := pipeTrace(1)
	wantHostile.Model = "gpt-4o-mini\uFFFDx"
	wantHostile.RequestID = "\uFFFD" + strings.Repeat("r", MaxRequestIDBytes-len("\uFFFD"))
	wantHostile.ServedModel = "served\uFFFD"
	wantHostile.ErrorType = strings.Repeat("e", MaxErrorTypeBytes)
	wantHostile.Provider = "p\uFFFD"
	wantHostile.FinishReasons = []string{"stop\uFFFD", strings.Repeat("f", MaxFinishReasonBytes)}
	wantHostile.FieldsCut = true
	wantHostile.SealedRequest, wantHostile.KeyVersion, _ = pipeSealer{}.Seal(wantHostile.TenantID, BodyRecordID(wantHostile.ID, BodyRequest), []byte("body\x00\xff kept exactly"))
	wantHostile.SealedResponse, _, _ = pipeSealer{}.Seal(wantHostile.TenantID, BodyRecordID(wantHostile.ID, BodyResponse), wantHostile.ResponseBody)
	wantHostile.RequestBody, wantHostile.ResponseBody = nil, nil
	wantClean := pipeTrace(2)
	wantClean.SealedRequest, wantClean.KeyVersion, _ = pipeSealer{}.Seal(wantClean.TenantID, BodyRecordID(wantClean.ID, BodyRequest), wantClean.RequestBody)
	wantClean.SealedResponse, _, _ = pipeSealer{}.Seal(wantClean.TenantID, BodyRecordID(wantClean.ID, BodyResponse), wantClean.ResponseBody)
	wantClean.RequestBody, wantClean.ResponseBody = nil, nil
	if diff := cmp.Diff([]*Trace{wantHostile, wantClean}, sortedByID(sink.Traces()), exactBytes); diff != "" {
		t.Errorf("sink traces (-want +got):\n%s", diff)
	}
}

// FuzzStoreSafe: whatever bytes a client or an upstream puts in a text field, the trace
// made store-safe is valid UTF-8, NUL-free, within each maximum, unchanged by a second
// pass, and accepted by both built-in stores.
func FuzzStoreSafe(f *testing.F) {
	for _, s := range []string{"", "gpt-4o-mini", "gpt-4o-mini\x00x", "\xff\xfe\xfd", "\xc3", "a\x00\x00b",
		strings.Repeat("Ω", 200), strings.Repeat("\xff", 600), "<script>alert(1)</script>", "\u2028\ufeff"} {
		f.Add(s)
	}
	pool := newSinkTestPostgres(f)
	pg, err := NewPostgresSink(f.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		f.Fatal(err)
	}
	lite := NewSQLiteSink(newSinkTestSQLite(f))
	f.Fuzz(func(t *testing.T, s string) {
		tr := sinkTestTraces(1, time.Now())[0]
		tr.TenantID, tr.APIKeyID, tr.RequestID, tr.Model, tr.ServedModel = s, s, s, s, s
		tr.Provider, tr.ErrorType, tr.UsageSource, tr.PriceVersion = s, s, UsageSource(s), s
		tr.FinishReasons = []string{s, "stop", s + s}
		makeStoreSafe(tr)
		for _, r := range tr.FinishReasons {
			if len(r) > MaxFinishReasonBytes || !utf8.ValidString(r) || strings.ContainsRune(r, 0) || r == "" {
				t.Fatalf("store-safe finish reason %q from %q", r, s)
			}
		}
		for _, v := range []struct {
			v     string
			limit int
		}{{tr.TenantID, MaxTenantIDBytes}, {tr.RequestID, MaxRequestIDBytes}, {tr.Model, MaxModelBytes},
			{tr.ErrorType, MaxErrorTypeBytes}, {string(tr.UsageSource), MaxUsageSourceBytes}} {
			if len(v.v) > v.limit || !utf8.ValidString(v.v) || strings.ContainsRune(v.v, 0) {
				t.Fatalf("store-safe %q from %q: over %d bytes, invalid UTF-8 or NUL", v.v, s, v.limit)
			}
			if again, ok := storeSafe(v.v, v.limit); !ok || again != v.v {
				t.Fatalf("store-safe %q changed on a second pass", v.v)
			}
		}
		for name, sink := range map[string]Sink{"postgres": pg, "sqlite": lite} {
			if err := sink.WriteBatch(t.Context(), []*Trace{tr}); err != nil {
				t.Fatalf("%s refused the store-safe trace from %q: %v", name, s, err)
			}
		}
	})
}
