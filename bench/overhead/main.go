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
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
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
