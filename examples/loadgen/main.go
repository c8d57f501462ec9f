// Command loadgen sends chat completions to any OpenAI-compatible endpoint and reports
// throughput, latency percentiles and, for streams, time to first byte and per-chunk
// delay. Loom's benchmarks run it against examples/mockupstream directly and through
// the gateway, and subtract.
//
//	go run ./examples/loadgen -url http://127.0.0.1:8080/v1 -key loom_… -model openai/gpt-4o-mini \
//	    -stream -concurrency 16 -duration 10s -warmup 2s
//
// Two load models:
//
//   - closed (default): -concurrency workers, each sending its next request as soon as
//     the previous one ends; latency runs from the actual send.
//   - open (-rate R): requests are due every 1/R seconds whatever happened to earlier
//     ones, sent by up to -max-inflight workers, and latency runs from the due time, so
//     queueing (waiting for a free slot, a late dispatcher) is measured rather than hidden
//     by coordinated omission. Requests that found every slot busy are counted as late.
//
// Requests started during -warmup are sent but not counted. The run ends after
// -warmup + -duration (or -max-requests measured requests); requests in flight then are
// awaited, each bounded by -timeout.
//
// Latency is the time to the end of the whole response body, for successful requests.
// TTFB is the time to the first byte of the body. Chunks are the SSE data events before
// data: [DONE]. Chunk delay is the receive time of an event minus the "loom_sent_ns" the
// mock upstream stamps into it: both read this host's wall clock, so the figure is only
// meaningful when the upstream and loadgen run on the same machine. Percentiles are
// nearest-rank over log-linear histograms, at most 0.8 % above the exact value.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}

// headerFlag collects repeated -H 'Name: value' flags.
type headerFlag []string

func (h *headerFlag) String() string { return strings.Join(*h, ", ") }
func (h *headerFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

// run parses args, sends the load and writes the report to stdout. It returns an error
// for bad flags only: failed requests are part of the report.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		baseURL      = fs.String("url", "", "base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1 (or the full …/chat/completions URL)")
		key          = fs.String("key", "", "API key, sent as Authorization: Bearer")
		model        = fs.String("model", "gpt-4o-mini", "model of every request")
		prompt       = fs.String("prompt", "Say hello in one short sentence.", "user message of every request")
		stream       = fs.Bool("stream", false, "ask for streamed (SSE) answers")
		includeUsage = fs.Bool("include-usage", false, "with -stream, set stream_options.include_usage")
		concurrency  = fs.Int("concurrency", 1, "closed model: workers sending back to back")
		rate         = fs.Float64("rate", 0, "open model: requests per second on a fixed schedule (0: closed model)")
		maxInflight  = fs.Int("max-inflight", 256, "open model: the most requests in flight")
		duration     = fs.Duration("duration", 10*time.Second, "measured time, after the warm-up")
		warmup       = fs.Duration("warmup", time.Second, "time whose requests are sent but not counted")
		timeout      = fs.Duration("timeout", 30*time.Second, "bound on each request, body included")
		maxRequests  = fs.Int64("max-requests", 0, "stop after this many measured requests (0: no bound)")
		asJSON       = fs.Bool("json", false, "print the result as JSON")
		headers      headerFlag
	)
	fs.Var(&headers, "H", "extra request header 'Name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	target, err := chatURL(*baseURL)
	if err != nil {
		return err
	}
	switch {
	case *concurrency < 1:
		return errors.New("-concurrency must be at least 1")
	case *rate < 0 || *rate > 1e6:
		return errors.New("-rate must be between 0 and 1e6")
	case *rate > 0 && *maxInflight < 1:
		return errors.New("-max-inflight must be at least 1")
	case *duration <= 0 || *warmup < 0 || *timeout <= 0:
		return errors.New("-duration and -timeout must be positive, -warmup not negative")
	case *maxRequests < 0:
		return errors.New("-max-requests must not be negative")
	}

	hdr := http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {"loom-loadgen/1"},
		"Accept":       {"application/json"},
	}
	if *stream {
		hdr.Set("Accept", "text/event-stream")
	}
	if *key != "" {
		hdr.Set("Authorization", "Bearer "+*key)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		hdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	body, err := requestBody(*model, *prompt, *stream, *includeUsage)
	if err != nil {
		return err
	}
	cfg := config{
		url:         target,
		header:      hdr,
		body:        body,
		stream:      *stream,
		concurrency: *concurrency,
		rate:        *rate,
		maxInflight: *maxInflight,
		duration:    *duration,
		warmup:      *warmup,
		timeout:     *timeout,
		maxRequests: *maxRequests,
	}
	if cfg.rate > 0 {
		cfg.concurrency = 0
	} else {
		cfg.maxInflight = 0
	}
	g := newGenerator(cfg)
	g.run(ctx)
	res := g.result(*model)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.writeText(stdout)
	return nil
}

// chatURL turns a base URL into the chat completions URL.
func chatURL(base string) (string, error) {
	if base == "" {
		return "", errors.New("-url is required")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("-url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-url %q: want http:// or https:// and a host", base)
	}
	if !strings.HasSuffix(u.Path, "/chat/completions") {
		u.Path = strings.TrimRight(u.Path, "/") + "/chat/completions"
	}
	return u.String(), nil
}

func requestBody(model, prompt string, stream, includeUsage bool) ([]byte, error) {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	req := struct {
		Model         string         `json:"model"`
		Messages      []message      `json:"messages"`
		Stream        bool           `json:"stream,omitempty"`
		StreamOptions *streamOptions `json:"stream_options,omitempty"`
	}{Model: model, Messages: []message{{"user", prompt}}, Stream: stream}
	if stream && includeUsage {
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	return json.Marshal(req)
}

// Result is the report, as printed by -json. Times are in microseconds.
type Result struct {
	URL         string  `json:"url"`
	Model       string  `json:"model"`
	Stream      bool    `json:"stream"`
	Mode        string  `json:"mode"` // "closed" or "open"
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	MaxInflight int     `json:"max_inflight,omitempty"`
	WarmupS     float64 `json:"warmup_s"`
	// ElapsedS runs from the end of the warm-up to the end of the last measured request.
	ElapsedS float64 `json:"elapsed_s"`

	// Requests are the measured requests that ended, OK those that succeeded.
	Requests     int64            `json:"requests"`
	OK           int64            `json:"ok"`
	Errors       int64            `json:"errors"`
	ErrorsByKind map[string]int64 `json:"errors_by_kind"`
	FirstError   string           `json:"first_error,omitempty"`
	// RPS is Requests / ElapsedS.
	RPS float64 `json:"rps"`
	// SentTotal and AnsweredTotal count every request, warm-up included: sent, and
	// answered with an HTTP status (what a gateway should have a trace of).
	SentTotal     int64 `json:"sent_total"`
	AnsweredTotal int64 `json:"answered_total"`

	Latency Percentiles `json:"latency_us"`
	TTFB    Percentiles `json:"ttfb_us"`

	Chunks           int64        `json:"chunks"`
	ChunksPerRequest float64      `json:"chunks_per_request"`
	ChunkDelay       *Percentiles `json:"chunk_delay_us,omitempty"`

	// Open model: how late requests were sent after their due time, and how many found
	// every slot busy.
	StartLag   *Percentiles `json:"start_lag_us,omitempty"`
	LateStarts int64        `json:"late_starts"`
}

// Percentiles of one measure, in microseconds.
type Percentiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

func percentiles(h *histogram) Percentiles {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Percentiles{
		Count: h.count(),
		P50:   us(h.percentile(50)),
		P90:   us(h.percentile(90)),
		P99:   us(h.percentile(99)),
		Max:   us(h.max.Load()),
		Mean:  h.mean() / 1e3,
	}
}

func (g *generator) result(model string) *Result {
	r := &Result{
		URL:           g.cfg.url,
		Model:         model,
		Stream:        g.cfg.stream,
		Mode:          "closed",
		Concurrency:   g.cfg.concurrency,
		Rate:          g.cfg.rate,
		MaxInflight:   g.cfg.maxInflight,
		WarmupS:       g.cfg.warmup.Seconds(),
		Requests:      g.requests.Load(),
		OK:            g.ok.Load(),
		ErrorsByKind:  g.errKinds,
		FirstError:    g.firstErr,
		SentTotal:     g.sent.Load(),
		AnsweredTotal: g.answered.Load(),
		Latency:       percentiles(&g.latency),
		TTFB:          percentiles(&g.ttfb),
		Chunks:        g.chunks.Load(),
		LateStarts:    g.late.Load(),
	}
	r.Errors = r.Requests - r.OK
	if g.cfg.rate > 0 {
		r.Mode = "open"
		p := percentiles(&g.startLag)
		r.StartLag = &p
	}
	if last := g.lastDone.Load(); last > 0 {
		r.ElapsedS = max(0, time.Unix(0, last).Sub(g.measureStart).Seconds())
	}
	if r.ElapsedS > 0 {
		r.RPS = float64(r.Requests) / r.ElapsedS
	}
	if r.OK > 0 {
		r.ChunksPerRequest = float64(r.Chunks) / float64(r.OK)
	}
	if g.chunkDelay.count() > 0 {
		p := percentiles(&g.chunkDelay)
		r.ChunkDelay = &p
	}
	return r
}

func (r *Result) writeText(w io.Writer) {
	d := func(us float64) string {
		t := time.Duration(us * 1e3)
		switch {
		case t < time.Millisecond:
			return t.Round(100 * time.Nanosecond).String()
		case t < time.Second:
			return t.Round(10 * time.Microsecond).String()
		}
		return t.Round(time.Millisecond).String()
	}
	row := func(name string, p Percentiles) {
		fmt.Fprintf(w, "%-12s p50 %-9s p90 %-9s p99 %-9s max %-9s mean %s\n",
			name, d(p.P50), d(p.P90), d(p.P99), d(p.Max), d(p.Mean))
	}
	kind := "non-streaming"
	if r.Stream {
		kind = "streaming"
	}
	fmt.Fprintf(w, "target       %s  model %s  %s\n", r.URL, r.Model, kind)
	if r.Mode == "open" {
		fmt.Fprintf(w, "load         open, %g req/s, max in flight %d, %.1fs measured after %gs warm-up\n",
			r.Rate, r.MaxInflight, r.ElapsedS, r.WarmupS)
	} else {
		fmt.Fprintf(w, "load         closed, concurrency %d, %.1fs measured after %gs warm-up\n",
			r.Concurrency, r.ElapsedS, r.WarmupS)
	}
	fmt.Fprintf(w, "requests     %d (ok %d, errors %d)  %.1f req/s  [sent %d, answered %d with warm-up]\n",
		r.Requests, r.OK, r.Errors, r.RPS, r.SentTotal, r.AnsweredTotal)
	if r.OK > 0 {
		row("latency", r.Latency)
		row("ttfb", r.TTFB)
	}
	if r.Stream {
		fmt.Fprintf(w, "chunks       %d (%.1f per request)\n", r.Chunks, r.ChunksPerRequest)
		if r.ChunkDelay != nil {
			row("chunk delay", *r.ChunkDelay)
		}
	}
	if r.StartLag != nil {
		row("start lag", *r.StartLag)
		fmt.Fprintf(w, "late starts  %d (found every slot busy)\n", r.LateStarts)
	}
	if r.Errors > 0 {
		kinds := make([]string, 0, len(r.ErrorsByKind))
		for k := range r.ErrorsByKind {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "error        %s: %d\n", k, r.ErrorsByKind[k])
		}
		fmt.Fprintf(w, "first error  %s\n", r.FirstError)
	}
}
