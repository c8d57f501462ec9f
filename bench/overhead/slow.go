package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// This file is the slow-streams run: many long streams held open, and the memory each costs.

// slowResult is what N concurrent slow streams cost a target.
type slowResult struct {
	Target  string `json:"target"`
	Streams int    `json:"streams"`
	Samples int    `json:"samples"`
	// The fewest established connections into the target, and into the mock, over the
	// samples: streams open (plus idle keep-alive connections, if any).
	ConnsIn       int   `json:"min_connections_in"`
	ConnsUpstream int   `json:"min_connections_upstream"`
	RSSIdleKB     int64 `json:"rss_idle_kb"`
	RSSDuringKB   int64 `json:"rss_during_kb"` // max over the samples
	// From the gateway's /metrics; zero for the reverse proxy. Heap is
	// go_memstats_heap_inuse_bytes as scraped, Live the same right after a forced GC.
	Metrics          bool     `json:"has_metrics"`
	HeapIdle         int64    `json:"heap_inuse_idle_bytes,omitempty"`
	HeapDuring       int64    `json:"heap_inuse_during_bytes,omitempty"`
	LiveIdle         int64    `json:"heap_inuse_after_gc_idle_bytes,omitempty"`
	LiveDuring       int64    `json:"heap_inuse_after_gc_during_bytes,omitempty"`
	GoroutinesIdle   int64    `json:"goroutines_idle,omitempty"`
	GoroutinesDuring int64    `json:"goroutines_during,omitempty"`
	Load             lgResult `json:"loadgen"`
	Warmup           lgResult `json:"warmup"`
}

// perStream is (during − idle) / streams.
func (r *slowResult) perStream(idle, during int64) float64 {
	return float64(during-idle) / float64(r.Streams)
}

// slowTarget is a target of the slow-streams measurement.
type slowTarget struct {
	target
	metricsURL, gcURL string // the gateway's /metrics and its forced-GC heap profile
}

// slowStreams starts a slow mock, a gateway (tracing on) and a reverse proxy in front of
// it, and measures each with -slow-streams concurrent streams.
func (b *bench) slowStreams(ctx context.Context) ([]*slowResult, []string, error) {
	o := b.o
	streamLen := slowChunks * slowChunkDelay
	mockArgs := []string{"-chunks", strconv.Itoa(slowChunks), "-chunk-bytes", strconv.Itoa(o.chunkBytes),
		"-chunk-delay", slowChunkDelay.String()}
	mock, mockURL, err := b.startListener(ctx, "mockupstream-slow", "mockupstream", mockArgs)
	if err != nil {
		return nil, nil, err
	}
	b.logf("slow mock upstream at %s (%s)", mockURL, strings.Join(mockArgs, " "))
	mockPort, err := urlPort(mockURL)
	if err != nil {
		return nil, nil, err
	}

	var results []*slowResult
	var checks []string

	var tracesBefore int64 // with -slow-streams-only, the database is new: no traces table yet
	if !o.slowStreamsOnly {
		if tracesBefore, err = countTraces(ctx, b.dbURL); err != nil {
			return nil, nil, err
		}
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	gw, gwURL, err := b.startGateway(ctx, "gateway-slow", "on", mockURL, "LOOM_PPROF_ADDR="+pprofAddr)
	if err != nil {
		return nil, nil, err
	}
	t := &slowTarget{target: target{name: gateway, url: gwURL + "/v1", model: "openai/gpt-4o-mini", key: b.key,
		proc: gw, gateway: true}, metricsURL: gwURL + "/metrics", gcURL: "http://" + pprofAddr + "/debug/pprof/heap?gc=1"}
	r, err := b.measureSlow(ctx, t, mock, mockPort, streamLen)
	if err != nil {
		return nil, nil, err
	}
	results = append(results, r)
	b.logf("stopping the slow-streams gateway (SIGTERM) and waiting for its traces")
	if err := gw.stop(60 * time.Second); err != nil {
		checks = append(checks, fmt.Sprintf("FAIL slow-streams gateway did not stop cleanly: %v", err))
	}
	n, err := countTraces(ctx, b.dbURL)
	if err != nil {
		return nil, nil, err
	}
	want := r.Warmup.AnsweredTotal + r.Load.AnsweredTotal
	status := "ok  "
	if n-tracesBefore != want {
		status = "FAIL"
	}
	checks = append(checks, fmt.Sprintf("%s slow-streams gateway: %d new rows in traces, %d expected (requests answered, warm-up included)",
		status, n-tracesBefore, want))

	if !o.noReverseProxy {
		p, u, err := b.startListener(ctx, "reverseproxy-slow", "reverseproxy", []string{"-upstream", mockURL})
		if err != nil {
			return nil, nil, err
		}
		b.logf("slow-streams reverse proxy at %s (PID %d)", u, p.pid())
		r, err := b.measureSlow(ctx, &slowTarget{target: target{name: reverseProxy, url: u + "/v1", model: "gpt-4o-mini", proc: p}},
			mock, mockPort, streamLen)
		if err != nil {
			return nil, nil, err
		}
		results = append(results, r)
		p.stop(5 * time.Second)
	}

	for _, r := range results {
		switch {
		case r.Load.Errors > 0:
			checks = append(checks, fmt.Sprintf("FAIL slow streams %s: %d errors %v, first: %s",
				r.Target, r.Load.Errors, r.Load.ErrorsByKind, r.Load.FirstError))
		case r.Load.Requests != int64(r.Streams):
			checks = append(checks, fmt.Sprintf("FAIL slow streams %s: %d streams, %d wanted (a stream ended before the load did?)",
				r.Target, r.Load.Requests, r.Streams))
		}
		if r.ConnsIn < r.Streams || r.ConnsUpstream < r.Streams {
			checks = append(checks, fmt.Sprintf("FAIL slow streams %s: at some sample only %d connections in and %d to the mock were open, for %d streams",
				r.Target, r.ConnsIn, r.ConnsUpstream, r.Streams))
		}
		if r.Load.ChunksPerRequest != results[0].Load.ChunksPerRequest {
			checks = append(checks, fmt.Sprintf("FAIL slow streams %s: %.2f chunks per stream, %s %.2f",
				r.Target, r.Load.ChunksPerRequest, results[0].Target, results[0].Load.ChunksPerRequest))
		}
	}
	return results, checks, nil
}

// measureSlow sends one warm-up stream, reads t's idle figures, then holds
// -slow-streams streams open and samples its figures while they are.
func (b *bench) measureSlow(ctx context.Context, t *slowTarget, mock *process, mockPort int, streamLen time.Duration) (*slowResult, error) {
	n := b.o.slowStreams
	r := &slowResult{Target: t.name, Streams: n, Metrics: t.metricsURL != ""}
	port, err := urlPort(t.url)
	if err != nil {
		return nil, err
	}
	args := func(conc int, extra ...string) []string {
		a := []string{"-url", t.url, "-model", t.model, "-stream", "-include-usage", "-concurrency", strconv.Itoa(conc),
			"-warmup", "0s", "-timeout", (3*streamLen + 30*time.Second).String(), "-json"}
		if t.key != "" {
			a = append(a, "-key", t.key)
		}
		return append(a, extra...)
	}
	// No keep-alive: the scrapes' connections must not count as streams.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

	b.logf("slow streams %s: one warm-up stream (%v)", t.name, streamLen)
	if err := b.loadgen(ctx, args(1, "-max-requests", "1", "-duration", "10m"), &r.Warmup); err != nil {
		return nil, err
	}
	if r.Warmup.Errors > 0 || r.Warmup.AnsweredTotal != 1 {
		return nil, fmt.Errorf("slow streams %s: warm-up stream failed: %v %s", t.name, r.Warmup.ErrorsByKind, r.Warmup.FirstError)
	}
	t.proc.settle(10 * time.Second)
	mock.settle(2 * time.Second)
	idle, err := t.sample(client)
	if err != nil {
		return nil, err
	}
	r.RSSIdleKB, r.HeapIdle, r.LiveIdle, r.GoroutinesIdle = idle.rssKB, idle.heap, idle.live, idle.goroutines

	// The load lasts 8/10 of a stream, so each worker sends exactly one stream and all N
	// are open from the ramp-up until the first ends; samples fall in 4/10–7/10.
	b.logf("slow streams %s: %d concurrent streams", t.name, n)
	la := args(n, "-duration", (streamLen * 8 / 10).String())
	cmd := exec.CommandContext(ctx, filepath.Join(b.tmp, "loadgen"), la...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.ConnsIn, r.ConnsUpstream = -1, -1
	var sampleErr error
	for i := 4; i <= 7; i++ {
		if err := sleepCtx(ctx, time.Until(start.Add(streamLen*time.Duration(i)/10))); err != nil {
			sampleErr = err
			break
		}
		in, err1 := establishedTo(port)
		up, err2 := establishedTo(mockPort)
		s, err3 := t.sample(client)
		if err := errors.Join(err1, err2, err3); err != nil {
			sampleErr = err
			break
		}
		r.Samples++
		if r.ConnsIn < 0 || in < r.ConnsIn {
			r.ConnsIn = in
		}
		if r.ConnsUpstream < 0 || up < r.ConnsUpstream {
			r.ConnsUpstream = up
		}
		r.RSSDuringKB = max(r.RSSDuringKB, s.rssKB)
		r.HeapDuring, r.LiveDuring = max(r.HeapDuring, s.heap), max(r.LiveDuring, s.live)
		r.GoroutinesDuring = max(r.GoroutinesDuring, s.goroutines)
		line := fmt.Sprintf("  %4.1fs: %d connections in, %d to the mock, RSS %.1fMiB",
			time.Since(start).Seconds(), in, up, float64(s.rssKB)/1024)
		if r.Metrics {
			line += fmt.Sprintf(", heap %.1fMiB (after GC %.1fMiB), %d goroutines",
				float64(s.heap)/(1<<20), float64(s.live)/(1<<20), s.goroutines)
		}
		b.logf("%s", line)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("loadgen %s: %v\n%s", strings.Join(la, " "), err, stderr.String())
	}
	if sampleErr != nil {
		return nil, fmt.Errorf("slow streams %s: sample: %w", t.name, sampleErr)
	}
	if err := json.Unmarshal([]byte(stdout.String()), &r.Load); err != nil {
		return nil, fmt.Errorf("loadgen output: %v\n%s", err, stdout.String())
	}
	os.WriteFile(filepath.Join(b.tmp, fmt.Sprintf("loadgen-slow-%s.json", t.name)), []byte(stdout.String()), 0o644)
	b.logf("slow streams %s: %d streams, %d errors, %.1f chunks per stream", t.name, r.Load.Requests, r.Load.Errors, r.Load.ChunksPerRequest)
	return r, nil
}

// loadgen runs loadgen with args and decodes its JSON output into res.
func (b *bench) loadgen(ctx context.Context, args []string, res *lgResult) error {
	cmd := exec.CommandContext(ctx, filepath.Join(b.tmp, "loadgen"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("loadgen %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(out, res); err != nil {
		return fmt.Errorf("loadgen output: %v\n%s", err, out)
	}
	return nil
}

type memSample struct {
	rssKB, heap, live, goroutines int64
}

// sample reads the target's VmRSS and, if it has /metrics, its heap and goroutines as
// scraped and its heap right after a forced GC.
func (t *slowTarget) sample(client *http.Client) (memSample, error) {
	var s memSample
	var err error
	if s.rssKB, err = t.proc.statusKB("VmRSS"); err != nil || t.metricsURL == "" {
		return s, err
	}
	m, err := scrape(client, t.metricsURL)
	if err != nil {
		return s, err
	}
	s.heap, s.goroutines = m["go_memstats_heap_inuse_bytes"], m["go_goroutines"]
	resp, err := client.Get(t.gcURL)
	if err != nil {
		return s, fmt.Errorf("forced GC: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("forced GC: %s", resp.Status)
	}
	if m, err = scrape(client, t.metricsURL); err != nil {
		return s, err
	}
	s.live = m["go_memstats_heap_inuse_bytes"]
	return s, nil
}

// scrape reads the unlabelled integer samples of a Prometheus text page.
func scrape(client *http.Client, url string) (map[string]int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			m[name] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, k := range []string{"go_memstats_heap_inuse_bytes", "go_goroutines"} {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("GET %s: no %s", url, k)
		}
	}
	return m, nil
}

// urlPort is the port of an http://host:port URL.
func urlPort(raw string) (int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, err
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return 0, fmt.Errorf("no port in %q", raw)
	}
	return p, nil
}

// establishedTo counts the established TCP connections whose local port is port, on
// this host: the accepted side of the connections into a listener on that port.
func establishedTo(port int) (int, error) {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, err
		}
		for i, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if i == 0 || len(fields) < 4 || fields[3] != "01" { // 01: ESTABLISHED
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				n++
			}
		}
	}
	return n, nil
}
