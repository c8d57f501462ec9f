package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
)

// This file prints the results as the tables BENCHMARKS.md quotes.

func report(w io.Writer, o *options, results []*runResult, slow []*slowResult, checks []string) {
	byKey := map[string]*runResult{}
	for _, r := range results {
		byKey[fmt.Sprint(r.Target, r.Concurrency, r.Stream)] = r
	}
	directOf := func(r *runResult) *runResult { return byKey[fmt.Sprint(direct, r.Concurrency, r.Stream)] }
	f := func(v float64) string {
		if v >= 1000 {
			return fmt.Sprintf("%.2fms", v/1000)
		}
		return fmt.Sprintf("%.0fµs", v)
	}
	signed := func(v float64) string {
		if v >= 0 {
			return "+" + f(v)
		}
		return "-" + f(-v)
	}

	fmt.Fprintf(w, "\nLoom gateway overhead: %d CPUs, %s.\n", runtime.NumCPU(), runtime.Version())
	if len(results) > 0 {
		fmt.Fprintf(w, "Closed-model load, %v measured after %v warm-up per run.\n", o.duration, o.warmup)
		fmt.Fprintf(w, "Mock upstream: %s. Streams ask for usage (include_usage).\n", strings.Join(o.mockArgs, " "))
		fmt.Fprintln(w, "Targets: direct = the mock itself; reverseproxy = a bare net/http/httputil.ReverseProxy (no auth, no tracing,")
		fmt.Fprintln(w, "flushing every write), the reference point; gateway = Loom with PostgreSQL store and traces, encrypted;")
		fmt.Fprintln(w, "tracing off = the same gateway with LOOM_TRACING=off. All four are measured back to back in each cell.")
		fmt.Fprintln(w, "added = target percentile − direct percentile. CPU = utime+stime per request sent (warm-up included);")
		fmt.Fprintln(w, "upstream = the mock's, during the same run; CPU ratio = target CPU / upstream CPU.")

		fmt.Fprintln(w, "\nLatency (full response), throughput, CPU and memory")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "conc\tmode\ttarget\tp50\tp99\tadded p50\tadded p99\treq/s\trps ratio\tCPU/req\tupstream CPU/req\tCPU ratio\tpeak RSS\tloadgen CPU/req\t")
		for _, r := range results {
			l, d := r.Load.Latency, directOf(r)
			line := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t", r.Concurrency, mode(r.Stream), r.Target, f(l.P50), f(l.P99))
			if r.Target == direct || d == nil {
				line += fmt.Sprintf("\t\t%.0f\t\t\t%.1fµs\t\t\t%.1fµs\t", r.Load.RPS, r.UpstreamCPUUS, r.LoadgenCPUUS)
			} else {
				ratio, cpuRatio := 0.0, 0.0
				if d.Load.RPS > 0 {
					ratio = r.Load.RPS / d.Load.RPS
				}
				if r.UpstreamCPUUS > 0 {
					cpuRatio = r.TargetCPUUS / r.UpstreamCPUUS
				}
				line += fmt.Sprintf("%s\t%s\t%.0f\t%.2f\t%.1fµs\t%.1fµs\t%.2f\t%.0fMB\t%.1fµs\t",
					signed(l.P50-d.Load.Latency.P50), signed(l.P99-d.Load.Latency.P99), r.Load.RPS, ratio,
					r.TargetCPUUS, r.UpstreamCPUUS, cpuRatio, float64(r.PeakRSSKB)/1024, r.LoadgenCPUUS)
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()

		hasStream := false
		for _, s := range o.modes {
			hasStream = hasStream || s
		}
		if hasStream {
			fmt.Fprintln(w, "\nStreams: time to first body byte, and per-chunk delay (mock's loom_sent_ns to loadgen's receive)")
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "conc\ttarget\tTTFB p50\tTTFB p99\tadded p50\tadded p99\tchunk p50\tchunk p99\tchunks/req\t")
			for _, r := range results {
				if !r.Stream {
					continue
				}
				t, d := r.Load.TTFB, directOf(r)
				c50, c99 := "-", "-"
				if cd := r.Load.ChunkDelay; cd != nil {
					c50, c99 = f(cd.P50), f(cd.P99)
				}
				a50, a99 := "", ""
				if r.Target != direct && d != nil {
					a50, a99 = signed(t.P50-d.Load.TTFB.P50), signed(t.P99-d.Load.TTFB.P99)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n", r.Concurrency, r.Target, f(t.P50), f(t.P99),
					a50, a99, c50, c99, r.Load.ChunksPerRequest)
			}
			tw.Flush()
		}
	}

	if len(slow) > 0 {
		reportSlow(w, o, slow)
	}

	var problems []string
	for _, r := range results {
		if r.Load.Errors > 0 {
			problems = append(problems, fmt.Sprintf("FAIL %s c=%d %s: %d errors %v, first: %s",
				r.Target, r.Concurrency, mode(r.Stream), r.Load.Errors, r.Load.ErrorsByKind, r.Load.FirstError))
		}
		if d := directOf(r); r.Stream && d != nil && r.Load.ChunksPerRequest != d.Load.ChunksPerRequest {
			problems = append(problems, fmt.Sprintf("FAIL %s c=%d stream: %.2f chunks per request, direct %.2f",
				r.Target, r.Concurrency, r.Load.ChunksPerRequest, d.Load.ChunksPerRequest))
		}
	}
	if len(checks)+len(problems) > 0 {
		fmt.Fprintln(w, "\nChecks")
		for _, c := range append(checks, problems...) {
			fmt.Fprintln(w, "  "+c)
		}
	}
	fmt.Fprintln(w)
}

// reportSlow prints the slow-streams figures, one column per target.
func reportSlow(w io.Writer, o *options, slow []*slowResult) {
	size := func(v float64) string {
		a := max(v, -v)
		switch {
		case a >= 1<<20:
			return fmt.Sprintf("%.1fMiB", v/(1<<20))
		case a >= 1<<10:
			return fmt.Sprintf("%.1fKiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0fB", v)
	}
	fmt.Fprintf(w, "\nSlow streams: %d concurrent streams of %d chunks %v apart (%v each), -chunk-bytes %d.\n",
		o.slowStreams, slowChunks, slowChunkDelay, slowChunks*slowChunkDelay, o.chunkBytes)
	fmt.Fprintln(w, "gateway: a dedicated one, tracing on (PostgreSQL, encrypted); reverseproxy: httputil.ReverseProxy.")
	fmt.Fprintln(w, "idle = after one warm-up stream; during = max of samples at 4, 5, 6, 7 s into the load, while every")
	fmt.Fprintln(w, "stream is open; per stream = (during − idle) / streams. heap = go_memstats_heap_inuse_bytes from /metrics,")
	fmt.Fprintln(w, "as scraped and right after a forced GC (live data); RSS = VmRSS. connections = fewest established over the samples.")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, cell func(r *slowResult) string) {
		line := fmt.Sprintf("%-30s\t", label) // labels to the left, figures to the right
		for _, r := range slow {
			line += cell(r) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	metric := func(cell func(r *slowResult) string) func(r *slowResult) string {
		return func(r *slowResult) string {
			if !r.Metrics {
				return "-"
			}
			return cell(r)
		}
	}
	row("", func(r *slowResult) string { return r.Target })
	row("streams (answered, errors)", func(r *slowResult) string {
		return fmt.Sprintf("%d (%d, %d)", r.Streams, r.Load.AnsweredTotal, r.Load.Errors)
	})
	row("connections in / to the mock", func(r *slowResult) string { return fmt.Sprintf("%d / %d", r.ConnsIn, r.ConnsUpstream) })
	row("chunks per stream", func(r *slowResult) string { return fmt.Sprintf("%.1f", r.Load.ChunksPerRequest) })
	row("stream latency p50 / p99", func(r *slowResult) string {
		return fmt.Sprintf("%.2fs / %.2fs", r.Load.Latency.P50/1e6, r.Load.Latency.P99/1e6)
	})
	row("heap in use idle / during", metric(func(r *slowResult) string {
		return size(float64(r.HeapIdle)) + " / " + size(float64(r.HeapDuring))
	}))
	row("heap per stream", metric(func(r *slowResult) string { return size(r.perStream(r.HeapIdle, r.HeapDuring)) }))
	row("heap after GC idle / during", metric(func(r *slowResult) string {
		return size(float64(r.LiveIdle)) + " / " + size(float64(r.LiveDuring))
	}))
	row("heap after GC per stream", metric(func(r *slowResult) string { return size(r.perStream(r.LiveIdle, r.LiveDuring)) }))
	row("goroutines idle / during", metric(func(r *slowResult) string {
		return fmt.Sprintf("%d / %d", r.GoroutinesIdle, r.GoroutinesDuring)
	}))
	row("goroutines per stream", metric(func(r *slowResult) string {
		return fmt.Sprintf("%.2f", r.perStream(r.GoroutinesIdle, r.GoroutinesDuring))
	}))
	row("RSS idle / during", func(r *slowResult) string {
		return size(float64(r.RSSIdleKB)*1024) + " / " + size(float64(r.RSSDuringKB)*1024)
	})
	row("RSS per stream", func(r *slowResult) string { return size(r.perStream(r.RSSIdleKB, r.RSSDuringKB) * 1024) })
	tw.Flush()
}
