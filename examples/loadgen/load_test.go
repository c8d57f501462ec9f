package main

import (
	"bufio"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	// Every value falls in a bucket whose bounds hold it, and buckets are contiguous.
	prevUpper := int64(-1)
	for i := range numBuckets {
		u := upperOf(i)
		if u <= prevUpper {
			t.Fatalf("bucket %d upper %d ≤ previous %d", i, u, prevUpper)
		}
		if got := bucketOf(prevUpper + 1); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", prevUpper+1, got, i)
		}
		if got := bucketOf(u); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", u, got, i)
		}
		prevUpper = u
	}
	if prevUpper != 1<<maxBits-1 {
		t.Errorf("last upper %d, want 2^%d-1", prevUpper, maxBits)
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Errorf("huge value in bucket %d", got)
	}
}

// TestPercentiles compares the histogram with exact nearest-rank percentiles.
func TestPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() int64
	}{
		{"small exact", func() int64 { return rng.Int64N(200) }},
		{"latency-like", func() int64 { return int64(50e3 + rng.ExpFloat64()*200e3) }},
		{"wide", func() int64 { return rng.Int64N(int64(10 * time.Second)) }},
		{"constant", func() int64 { return 123456 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			vals := make([]int64, 10007)
			for i := range vals {
				vals[i] = tt.gen()
				h.record(vals[i])
			}
			slices.Sort(vals)
			for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
				exact := vals[int(math.Ceil(p/100*float64(len(vals))))-1]
				got := h.percentile(p)
				if got < exact || float64(got) > float64(exact)*(1+1.0/subCount) {
					t.Errorf("p%v = %d, exact %d: want within [exact, exact×(1+1/%d)]", p, got, exact, subCount)
				}
			}
			if got := h.max.Load(); got != vals[len(vals)-1] {
				t.Errorf("max %d, want %d", got, vals[len(vals)-1])
			}
			if h.count() != uint64(len(vals)) {
				t.Errorf("count %d", h.count())
			}
		})
	}
	var empty histogram
	if empty.percentile(99) != 0 || empty.mean() != 0 {
		t.Error("empty histogram not zero")
	}
	var neg histogram
	neg.record(-5)
	if neg.percentile(50) != 0 {
		t.Error("negative value not clamped to 0")
	}
}

func TestSentNS(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   int64
		wantOK bool
	}{
		{"end", `{"id":"x","choices":[],"loom_sent_ns":1767225600123456789}`, 1767225600123456789, true},
		{"middle", `{"loom_sent_ns":42,"id":"x"}`, 42, true},
		{"space", `{"loom_sent_ns": 42}`, 42, true},
		{"absent", `{"id":"x"}`, 0, false},
		{"not a number", `{"loom_sent_ns":"x"}`, 0, false},
		{"overflow", `{"loom_sent_ns":99999999999999999999}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := sentNS([]byte(tt.in))
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("sentNS(%s) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestReadStream(t *testing.T) {
	long := `{"pad":"` + strings.Repeat("x", maxLine) + `"}`
	tests := []struct {
		name       string
		body       string
		wantChunks int
		wantDelays uint64
		wantErr    string
	}{
		{"crlf and comments", ": keep-alive\r\n\r\ndata: {\"loom_sent_ns\":1}\r\n\r\nevent: x\r\ndata:{\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n", 2, 1, ""},
		{"no final newline", "data: {}\n\ndata: [DONE]", 1, 0, ""},
		{"long line", "data: " + long + "\n\ndata: {\"loom_sent_ns\":1}\n\ndata: [DONE]\n\n", 2, 1, ""},
		{"empty", "", 0, 0, "empty stream body"},
		{"no done", "data: {}\n\n", 1, 0, "without data: [DONE]"},
		{"after done", "data: [DONE]\n\ndata: {}\n\n", 0, 0, "after data: [DONE]"},
		{"error event", "data: {}\n\ndata: {\"error\":{}}\n\n", 1, 0, "error event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGenerator(config{timeout: time.Second})
			w := g.newWorker()
			_, chunks, err := w.readStream(bufio.NewReader(strings.NewReader(tt.body)), time.Now(), true)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if chunks != tt.wantChunks {
				t.Errorf("%d chunks, want %d", chunks, tt.wantChunks)
			}
			if got := g.chunkDelay.count(); got != tt.wantDelays {
				t.Errorf("%d delays, want %d", got, tt.wantDelays)
			}
		})
	}
}

func BenchmarkReadStream(b *testing.B) {
	var sb strings.Builder
	for range 18 {
		sb.WriteString(`data: {"id":"chatcmpl-mock1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_loom_mock","choices":[{"index":0,"delta":{"content":"Lorem ip"},"logprobs":null,"finish_reason":null}],"loom_sent_ns":1767225600123456789}` + "\n\n")
	}
	sb.WriteString("data: [DONE]\n\n")
	body := sb.String()
	g := newGenerator(config{timeout: time.Second})
	w := g.newWorker()
	r := strings.NewReader(body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(body)
		if _, n, err := w.readStream(r, time.Now(), true); err != nil || n != 18 {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h histogram
	b.ReportAllocs()
	v := int64(0)
	for b.Loop() {
		v += 7919
		h.record(v & (1<<30 - 1))
	}
}
