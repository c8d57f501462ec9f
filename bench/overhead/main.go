// Command overhead measures what the Loom gateway adds on top of its upstream: latency,
// time to first byte, per-chunk delay, throughput, CPU and memory, in one go, next to a
// bare reverse proxy as the reference point.
//
//	go run ./bench/overhead                      # the full matrix, 10 s per run
//	go run ./bench/overhead -duration 3s -direct-only
//	go run ./bench/overhead -slow-streams 1000 -slow-streams-only
//
// It builds examples/mockupstream, examples/loadgen, examples/server and bench/reverseproxy
// into a temporary directory, starts the mock upstream, and in front of it:
//
//   - "reverseproxy": a bare net/http/httputil.ReverseProxy (no auth, no tracing),
//     flushing every write; -no-reverseproxy leaves it out;
//   - "gateway": PostgreSQL store and trace sink, encrypted bodies (LOOM_MASTER_KEY);
//   - "tracing off": the same with LOOM_TRACING=off.
//
// The gateways share a fresh PostgreSQL database loom_bench_<pid> (created on -pg,
// dropped at the end).
//
// For each concurrency and mode (non-streaming, streaming) it runs loadgen (closed model,
// -warmup then -duration) against the mock directly, through the reverse proxy, through
// the gateway and through the tracing-off gateway, one right after the other so all four
// see the same machine load. Around each run it reads utime+stime of the target and of
// the mock from /proc/PID/stat (waiting for the target to go idle first, so trace writes
// that trail a run are counted) and divides by the requests sent, warm-up included; peak
// RSS is VmHWM from /proc/PID/status. PostgreSQL's own CPU is not counted.
//
// At the end it stops the gateways with SIGTERM (which flushes their traces), checks that
// the traces table holds one row per request the gateway answered, and that the
// tracing-off gateway wrote none.
//
// -slow-streams N then measures the memory an open stream holds (after the matrix, or
// alone with -slow-streams-only). A second mock streams 40 chunks 250 ms apart (10 s per
// stream); a dedicated gateway (tracing on, same database, key and master key) and a
// dedicated reverse proxy stand in front of it. For each, after one warm-up stream, it
// reads the idle figures, runs loadgen with N concurrent streams for 8 s (so the N first
// streams are all still open), and samples between 4 and 7 s: VmRSS, the number of
// established connections into the target and into the mock, and for the gateway its
// /metrics (go_memstats_heap_inuse_bytes, go_goroutines), both as scraped and right after
// a GC forced through its LOOM_PPROF_ADDR (/debug/pprof/heap?gc=1). Per-stream figures
// are (max during − idle) / N. The gateway's traces are checked as above.
//
// Every process it started is stopped on exit, on error and on SIGINT/SIGTERM.
//
// "Added" figures are differences of percentiles (target p99 − direct p99), not
// percentiles of differences. Chunk delays compare the mock's "loom_sent_ns" stamps with
// loadgen's clock, which is only valid because both run on this host.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "overhead:", err)
		}
		stop()
		os.Exit(1)
	}
}

type options struct {
	duration, warmup time.Duration
	concurrency      []int
	modes            []bool // stream or not
	directOnly       bool
	noReverseProxy   bool
	pgAdmin          string
	mockArgs         []string
	chunkBytes       int
	slowStreams      int
	slowStreamsOnly  bool
	out              string
	keep             bool
}

// The slow-streams mock: 40 chunks 250 ms apart, a 10-second stream.
const (
	slowChunks     = 40
	slowChunkDelay = 250 * time.Millisecond
)

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("overhead", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	defPG := os.Getenv("LOOM_TEST_POSTGRES")
	if defPG == "" {
		defPG = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up before each run (sent, not counted)")
	conc := fs.String("concurrency", "1,16,64", "comma-separated concurrencies (closed model)")
	modes := fs.String("modes", "nonstream,stream", "comma-separated modes: nonstream, stream")
	fs.BoolVar(&o.directOnly, "direct-only", false, "no gateway: measure the mock directly (and through the reverse proxy)")
	fs.BoolVar(&o.noReverseProxy, "no-reverseproxy", false, "leave out the bare httputil.ReverseProxy reference")
	fs.StringVar(&o.pgAdmin, "pg", defPG, "PostgreSQL server URL to create the bench database on")
	chunks := fs.Int("chunks", 16, "mock upstream: content chunks per stream")
	fs.IntVar(&o.chunkBytes, "chunk-bytes", 8, "mock upstream: content bytes per chunk")
	latency := fs.Duration("latency", 0, "mock upstream: delay before answering")
	chunkDelay := fs.Duration("chunk-delay", 0, "mock upstream: delay before each content chunk")
	fs.IntVar(&o.slowStreams, "slow-streams", 0, fmt.Sprintf("after the matrix, hold this many concurrent %v streams open and measure the memory they take (0: off)",
		slowChunks*slowChunkDelay))
	fs.BoolVar(&o.slowStreamsOnly, "slow-streams-only", false, "run only the -slow-streams measurement, not the matrix")
	fs.StringVar(&o.out, "out", "", "also write every run's numbers to this JSON file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs, loadgen output)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, c := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-concurrency: bad value %q", c)
		}
		o.concurrency = append(o.concurrency, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(m) {
		case "nonstream":
			o.modes = append(o.modes, false)
		case "stream":
			o.modes = append(o.modes, true)
		default:
			return nil, fmt.Errorf("-modes: bad value %q", m)
		}
	}
	switch {
	case o.slowStreams < 0:
		return nil, errors.New("-slow-streams must not be negative")
	case o.slowStreamsOnly && o.slowStreams == 0:
		return nil, errors.New("-slow-streams-only needs -slow-streams N")
	case o.slowStreams > 0 && o.directOnly:
		return nil, errors.New("-slow-streams measures the gateway: not with -direct-only")
	}
	o.mockArgs = []string{"-chunks", strconv.Itoa(*chunks), "-chunk-bytes", strconv.Itoa(o.chunkBytes),
		"-latency", latency.String(), "-chunk-delay", chunkDelay.String()}
	return o, nil
}

// lgResult is the part of loadgen's -json output used here.
type lgResult struct {
	Requests         int64            `json:"requests"`
	Errors           int64            `json:"errors"`
	ErrorsByKind     map[string]int64 `json:"errors_by_kind"`
	FirstError       string           `json:"first_error"`
	RPS              float64          `json:"rps"`
	SentTotal        int64            `json:"sent_total"`
	AnsweredTotal    int64            `json:"answered_total"`
	Latency          percentiles      `json:"latency_us"`
	TTFB             percentiles      `json:"ttfb_us"`
	ChunksPerRequest float64          `json:"chunks_per_request"`
	ChunkDelay       *percentiles     `json:"chunk_delay_us"`
}

type percentiles struct {
	P50, P90, P99, Max, Mean float64
}

// runResult is one loadgen run and the CPU and memory it cost.
type runResult struct {
	Target      string   `json:"target"`
	Concurrency int      `json:"concurrency"`
	Stream      bool     `json:"stream"`
	Load        lgResult `json:"loadgen"`
	// Per request sent (warm-up included), in microseconds of utime+stime.
	TargetCPUUS   float64 `json:"target_cpu_us_per_request,omitempty"` // the gateway; 0 for direct
	UpstreamCPUUS float64 `json:"upstream_cpu_us_per_request"`
	LoadgenCPUUS  float64 `json:"loadgen_cpu_us_per_request"`
	PeakRSSKB     int64   `json:"target_peak_rss_kb,omitempty"`
}

// target is where a run sends its load.
type target struct {
	name, url, model, key string
	proc                  *process // the reverse proxy or the gateway; nil for direct
	gateway               bool     // it writes traces (unless tracing is off)
}

const (
	direct       = "direct"
	reverseProxy = "reverseproxy"
	gateway      = "gateway"
	tracingOff   = "tracing off"
)

// bench holds what the matrix and the slow-streams measurement share.
type bench struct {
	o     *options
	tmp   string
	logf  func(string, ...any)
	procs []*process // stopped in reverse order on exit
	env   []string   // the gateways' environment, without OPENAI_BASE_URL and LOOM_TRACING
	key   string     // the bootstrap API key
	dbURL string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }

	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "loom-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		defer logf("kept %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{o: o, tmp: tmp, logf: logf}
	defer func() {
		for i := len(b.procs) - 1; i >= 0; i-- {
			b.procs[i].stop(5 * time.Second)
		}
	}()

	pkgs := []string{"./examples/mockupstream", "./examples/loadgen"}
	if !o.directOnly {
		pkgs = append(pkgs, "./examples/server")
	}
	if !o.noReverseProxy {
		pkgs = append(pkgs, "./bench/reverseproxy")
	}
	for _, pkg := range pkgs {
		logf("building %s", strings.TrimPrefix(pkg, "./"))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, filepath.Base(pkg)), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}

	if !o.directOnly {
		dbName := fmt.Sprintf("loom_bench_%d", os.Getpid())
		if b.dbURL, err = createDatabase(ctx, o.pgAdmin, dbName); err != nil {
			return err
		}
		logf("created database %s", dbName)
		defer func() {
			if err := dropDatabase(o.pgAdmin, dbName); err != nil {
				logf("drop database %s: %v", dbName, err)
			} else {
				logf("dropped database %s", dbName)
			}
		}()
		b.key = "loom_bench" + randomHex(16)
		masterKey := make([]byte, 32)
		rand.Read(masterKey)
		// Every gateway gets the same database, master key and bootstrap key: the first
		// to start runs the migrations and makes the bootstrap tenant, the others find
		// both done and accept the same key.
		b.env = append(cleanEnv(),
			"DATABASE_URL="+b.dbURL,
			"LOOM_MASTER_KEY="+base64.StdEncoding.EncodeToString(masterKey),
			"LOOM_BOOTSTRAP_KEY="+b.key,
			"OPENAI_API_KEY=sk-bench-mock",
			// The published numbers measure the gateway without a log line per request.
			"LOOM_ACCESS_LOG=off",
		)
	}

	var results []*runResult
	var checks []string
	if !o.slowStreamsOnly {
		if results, checks, err = b.matrix(ctx); err != nil {
			return err
		}
	}
	var slow []*slowResult
	if o.slowStreams > 0 {
		var more []string
		if slow, more, err = b.slowStreams(ctx); err != nil {
			return err
		}
		checks = append(checks, more...)
	}

	report(stdout, o, results, slow, checks)
	if o.out != "" {
		out, _ := json.MarshalIndent(struct {
			Runs        []*runResult  `json:"runs"`
			SlowStreams []*slowResult `json:"slow_streams,omitempty"`
		}{results, slow}, "", "  ")
		if err := os.WriteFile(o.out, append(out, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// start starts a child whose log is tmp/NAME.log and stops it on exit.
func (b *bench) start(name, bin string, args, env []string) (*process, error) {
	p, err := startProcess(filepath.Join(b.tmp, bin), args, env, filepath.Join(b.tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

// startListener starts a mock upstream or a reverse proxy and returns its base URL.
func (b *bench) startListener(ctx context.Context, name, bin string, args []string) (*process, string, error) {
	p, err := b.start(name, bin, append([]string{"-addr", "127.0.0.1:0"}, args...), nil)
	if err != nil {
		return nil, "", err
	}
	u, err := p.waitLine(ctx, "listening on ", 10*time.Second)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	return p, strings.TrimSpace(u), nil
}

// startGateway starts examples/server in front of upstream (a mock's base URL) and
// waits until it is ready.
func (b *bench) startGateway(ctx context.Context, name, tracing, upstream string, extraEnv ...string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	slug := strings.ReplaceAll(name, " ", "-")
	env := append(append(slices.Clip(b.env), "OPENAI_BASE_URL="+upstream+"/v1", "LOOM_TRACING="+tracing), extraEnv...)
	p, err := b.start(slug, "server", []string{"-addr", addr, "-data", filepath.Join(b.tmp, "data-"+slug)}, env)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitReady(ctx, "http://"+addr+"/readyz", 60*time.Second); err != nil {
		return nil, "", fmt.Errorf("%s (LOOM_TRACING=%s): %w", name, tracing, err)
	}
	b.logf("%s ready at http://%s (LOOM_TRACING=%s, PID %d)", name, addr, tracing, p.pid())
	return p, "http://" + addr, nil
}

// matrix measures every target at every concurrency and mode, then checks the traces.
func (b *bench) matrix(ctx context.Context) ([]*runResult, []string, error) {
	o := b.o
	mock, mockURL, err := b.startListener(ctx, "mockupstream", "mockupstream", o.mockArgs)
	if err != nil {
		return nil, nil, err
	}
	b.logf("mock upstream at %s (%s)", mockURL, strings.Join(o.mockArgs, " "))

	targets := []*target{{name: direct, url: mockURL + "/v1", model: "gpt-4o-mini"}}
	if !o.noReverseProxy {
		p, u, err := b.startListener(ctx, reverseProxy, "reverseproxy", []string{"-upstream", mockURL})
		if err != nil {
			return nil, nil, err
		}
		b.logf("reverse proxy at %s (PID %d)", u, p.pid())
		targets = append(targets, &target{name: reverseProxy, url: u + "/v1", model: "gpt-4o-mini", proc: p})
	}
	if !o.directOnly {
		// One after the other: the first runs the migrations and makes the bootstrap
		// tenant, the second finds both done.
		for _, g := range []struct{ name, tracing string }{{gateway, "on"}, {tracingOff, "off"}} {
			p, u, err := b.startGateway(ctx, g.name, g.tracing, mockURL)
			if err != nil {
				return nil, nil, err
			}
			targets = append(targets, &target{name: g.name, url: u + "/v1",
				model: "openai/gpt-4o-mini", key: b.key, proc: p, gateway: true})
		}
	}

	var results []*runResult
	for _, c := range o.concurrency {
		for _, stream := range o.modes {
			for _, t := range targets {
				r, err := measure(ctx, b.tmp, o, t, mock, c, stream)
				if err != nil {
					return nil, nil, err
				}
				b.logf("%-12s c=%-3d %-9s %8.0f req/s  p50 %8.1fµs  p99 %8.1fµs  errors %d  cpu %.1fµs/req",
					t.name, c, mode(stream), r.Load.RPS, r.Load.Latency.P50, r.Load.Latency.P99, r.Load.Errors,
					r.TargetCPUUS+r.UpstreamCPUUS)
				if r.Load.Errors > 0 {
					b.logf("  errors %v, first: %s", r.Load.ErrorsByKind, r.Load.FirstError)
				}
				results = append(results, r)
			}
		}
	}

	var checks []string
	if !o.directOnly {
		if checks, err = checkTraces(ctx, targets, results, b.dbURL, b.logf); err != nil {
			return nil, nil, err
		}
	}
	return results, checks, nil
}

func mode(stream bool) string {
	if stream {
		return "stream"
	}
	return "nonstream"
}

// measure runs loadgen once against t and reads the CPU the processes spent meanwhile.
func measure(ctx context.Context, tmp string, o *options, t *target, mock *process, c int, stream bool) (*runResult, error) {
	args := []string{"-url", t.url, "-model", t.model, "-concurrency", strconv.Itoa(c),
		"-duration", o.duration.String(), "-warmup", o.warmup.String(), "-timeout", "30s", "-json"}
	if t.key != "" {
		args = append(args, "-key", t.key)
	}
	if stream {
		args = append(args, "-stream", "-include-usage")
	}
	r := &runResult{Target: t.name, Concurrency: c, Stream: stream}
	if t.proc != nil {
		t.proc.settle(10 * time.Second)
	}
	mock.settle(2 * time.Second)
	tgt0, _ := t.proc.cpuTicks()
	mock0, err := mock.cpuTicks()
	if err != nil {
		return nil, err
	}

	cmd := exec.CommandContext(ctx, filepath.Join(tmp, "loadgen"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("loadgen %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(out, &r.Load); err != nil {
		return nil, fmt.Errorf("loadgen output: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(tmp, fmt.Sprintf("loadgen-%s-c%d-%s.json",
		strings.ReplaceAll(t.name, " ", "-"), c, mode(stream))), out, 0o644)

	if t.proc != nil {
		t.proc.settle(10 * time.Second) // count the trace writes that trail the run
	}
	tgt1, _ := t.proc.cpuTicks()
	mock1, err := mock.cpuTicks()
	if err != nil {
		return nil, err
	}
	if n := float64(r.Load.SentTotal); n > 0 {
		r.UpstreamCPUUS = ticksToUS(mock1-mock0) / n
		r.TargetCPUUS = ticksToUS(tgt1-tgt0) / n
		if u, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu := time.Duration(u.Utime.Nano() + u.Stime.Nano())
			r.LoadgenCPUUS = float64(cpu.Microseconds()) / n
		}
	}
	if t.proc != nil {
		r.PeakRSSKB, _ = t.proc.peakRSSKB()
	}
	return r, nil
}

// checkTraces stops the gateways (SIGTERM flushes their traces) and compares the traces
// table with the requests each answered.
func checkTraces(ctx context.Context, targets []*target, results []*runResult, dbURL string, logf func(string, ...any)) ([]string, error) {
	answered := map[string]int64{}
	for _, r := range results {
		answered[r.Target] += r.Load.AnsweredTotal
	}
	var checks []string
	var before int64
	for _, t := range targets {
		if !t.gateway {
			continue
		}
		logf("stopping %s (SIGTERM) and waiting for its traces", t.name)
		if err := t.proc.stop(60 * time.Second); err != nil {
			checks = append(checks, fmt.Sprintf("FAIL %s did not stop cleanly: %v", t.name, err))
		}
		n, err := countTraces(ctx, dbURL)
		if err != nil {
			return nil, err
		}
		got := n - before
		before = n
		want := answered[t.name]
		if t.name == tracingOff {
			want = 0
		}
		status := "ok  "
		if got != want {
			status = "FAIL"
		}
		checks = append(checks, fmt.Sprintf("%s %s: %d new rows in traces, %d expected (requests answered: %d)",
			status, t.name, got, want, answered[t.name]))
	}
	return checks, nil
}

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

// process is a child process whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProcess(bin string, args, env []string, logPath string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// If this program dies without cleaning up, the kernel stops the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the end of the process's log, for error messages.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitLine waits for a log line containing marker and returns what follows it.
func (p *process) waitLine(ctx context.Context, marker string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(p.log); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if _, after, ok := strings.Cut(sc.Text(), marker); ok {
					f.Close()
					return after, nil
				}
			}
			f.Close()
		}
		if p.exited() {
			return "", fmt.Errorf("exited (%v); log:\n%s", p.err, p.tail())
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no %q in its log within %v; log:\n%s", marker, timeout, p.tail())
}

// waitReady polls url until it answers 200.
func (p *process) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections() // an idle connection would count as an open stream
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("exited before it was ready (%v); log:\n%s", p.err, p.tail())
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("not ready on %s within %v; log:\n%s", url, timeout, p.tail())
}

// stop sends SIGTERM, waits up to grace, then kills. It reports a kill or a failed exit.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return p.err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("killed after %v without exiting", grace)
	}
}

// cpuTicks is utime+stime of the process in clock ticks. A nil process has none.
func (p *process) cpuTicks() (int64, error) {
	if p == nil {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it are plain.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", p.pid())
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// ticksToUS converts clock ticks to microseconds. USER_HZ is 100 on Linux for every
// architecture Go supports (the kernel scales its internal HZ to it for /proc).
func ticksToUS(t int64) float64 { return float64(t) * 1e4 }

// settle waits until the process has used no CPU for 300 ms (or timeout): what it
// does after a run (flushing traces) belongs to that run.
func (p *process) settle(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	last, _ := p.cpuTicks()
	quiet := 0
	for time.Now().Before(deadline) && quiet < 3 {
		time.Sleep(100 * time.Millisecond)
		now, err := p.cpuTicks()
		if err != nil {
			return
		}
		if now == last {
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
}

// peakRSSKB is VmHWM from /proc/PID/status.
func (p *process) peakRSSKB() (int64, error) { return p.statusKB("VmHWM") }

// statusKB is a field of /proc/PID/status given in kB, such as VmRSS.
func (p *process) statusKB(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.pid())
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// moduleRoot is the directory of the go.mod this is run in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run this inside the Loom module")
	}
	return filepath.Dir(mod), nil
}

// cleanEnv is this process's environment without anything that would configure the
// gateway behind the benchmark's back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LOOM_"), strings.HasPrefix(k, "OPENAI_"), strings.HasPrefix(k, "AZURE_OPENAI_"),
			strings.HasPrefix(k, "ANTHROPIC_"), k == "DATABASE_URL":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func createDatabase(ctx context.Context, admin, name string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w (start PostgreSQL, or pass -pg, or -direct-only)", admin, err)
	}
	defer conn.Close(cctx)
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// dropDatabase runs at exit, even after a signal, so it has its own context.
func dropDatabase(admin, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	return err
}

func countTraces(ctx context.Context, dbURL string) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(cctx)
	var n int64
	if err := conn.QueryRow(cctx, "SELECT count(*) FROM traces").Scan(&n); err != nil {
		return 0, fmt.Errorf("count traces: %w", err)
	}
	return n, nil
}
