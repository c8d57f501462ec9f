package loom

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-gateway/loom/tracing"
)

// BenchmarkObserveChat is the metrics' share of a request: one finished chat completion
// recorded into its cached series (request count, three histograms, four token counters),
// serially and from 64 goroutines at once.
func BenchmarkObserveChat(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry(), false, &Gateway{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	x := &exchange{t: &tracing.Trace{Provider: "openai", Model: "gpt-4o", TenantID: "t", Status: 200,
		OverheadUS: 60, TTFBUS: 900, PromptTokens: 12, CompletionTokens: 5, UsageSource: tracing.UsageReported},
		start: start, sent: start.Add(50 * time.Microsecond), last: start.Add(time.Millisecond)}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.observeChat(x)
		}
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.observeChat(x)
			}
		})
	})
}
