package main

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"

	"github.com/loom-gateway/loom"
)

// metrics serves the trace pipeline's counters in the Prometheus text format. Lost traces
// have their own counter per reason, so an alert can fire on any of them.
func metrics(gw *loom.Gateway) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := gw.TraceStats()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		counter := func(name, help string, v int64) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
		}
		counter("loom_traces_recorded_total", "Traces accepted by the pipeline.", st.Recorded)
		counter("loom_traces_written_total", "Traces acknowledged by every sink.", st.Written)
		counter("loom_trace_write_retries_total", "Failed sink writes, retried later.", st.Retries)
		counter("loom_trace_seal_errors_total", "Trace bodies dropped because sealing failed.", st.SealErrors)
		counter("loom_traces_quarantined_total", "Traces a sink refused for good, set aside in the dead-letter file.", st.Quarantined)
		ss := gw.StoreStats()
		counter("loom_auth_served_stale_total", "Requests whose API key was answered past the cache TTL because the store failed (degraded auth).", ss.AuthServedStale)
		counter("loom_routes_served_stale_total", "Requests whose tenant provider configurations were used past the cache TTL because the store failed.", ss.RoutesServedStale)
		fmt.Fprintf(w, "# HELP loom_auth_key_set_keys Keys held for a store outage (0: key set off).\n# TYPE loom_auth_key_set_keys gauge\nloom_auth_key_set_keys %d\n", ss.KeySetKeys)
		fmt.Fprintf(w, "# HELP loom_trace_sinks_refusing Sinks treated as down because they refuse every trace.\n# TYPE loom_trace_sinks_refusing gauge\nloom_trace_sinks_refusing %d\n", st.RefusingSinks)
		fmt.Fprintf(w, "# HELP loom_traces_pending Traces not yet acknowledged by every sink.\n# TYPE loom_traces_pending gauge\nloom_traces_pending %d\n", st.Pending)
		fmt.Fprintf(w, "# HELP loom_traces_lost_total Traces that could not be kept, by reason.\n# TYPE loom_traces_lost_total counter\n")
		for _, l := range []struct {
			reason string
			n      int64
		}{
			{"queue_full", st.LostQueueFull}, {"closed", st.LostClosed}, {"spool_full", st.LostSpoolFull},
			{"write", st.LostWrite}, {"encode", st.LostEncode}, {"corrupt", st.LostCorrupt}, {"shutdown", st.LostShutdown},
			{"refused", st.LostRefused}, {"lagging", st.LostLagging},
		} {
			fmt.Fprintf(w, "loom_traces_lost_total{reason=%q} %d\n", l.reason, l.n)
		}
		fmt.Fprintf(w, "# HELP loom_unpriced_requests_total Requests with usage but no price (model, service tier or token kind not in the price table).\n# TYPE loom_unpriced_requests_total counter\n")
		for _, u := range gw.UnpricedRequests() {
			fmt.Fprintf(w, "loom_unpriced_requests_total{provider=\"%s\",model=\"%s\"} %d\n", labelValue(u.Provider), labelValue(u.Model), u.Requests)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "# HELP go_memstats_heap_inuse_bytes Bytes in in-use heap spans.\n# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n", ms.HeapInuse)
		fmt.Fprintf(w, "# HELP go_goroutines Goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
	}
}

// labelValue escapes a label value for the Prometheus text format (backslash, quote and
// newline), after making it valid UTF-8: model names come from clients and upstreams.
func labelValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(strings.ToValidUTF8(s, "\uFFFD"))
}
