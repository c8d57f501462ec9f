package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// config is a validated load.
type config struct {
	url         string      // the full chat completions URL
	header      http.Header // shared by every request, never modified
	body        []byte      // shared by every request, read through a bytes.Reader each
	stream      bool
	concurrency int     // closed model: workers sending back to back
	rate        float64 // open model when > 0: requests per second on a fixed schedule
	maxInflight int     // open model: the most requests in flight
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	maxRequests int64 // measured requests; 0 means no bound
}

// generator runs one load and keeps its counts. Samples go to shared histograms; the
// rare errors go to a map under a mutex.
type generator struct {
	cfg config
	tr  *http.Transport

	start, measureStart, end time.Time
	claimed                  atomic.Int64 // measured requests started, against maxRequests

	sent, answered atomic.Int64 // every request, warm-up included
	requests, ok   atomic.Int64 // measured requests finished, and those that succeeded
	chunks         atomic.Int64 // events of successful measured streams, [DONE] excluded
	late           atomic.Int64 // open model: measured requests that waited for a slot
	lastDone       atomic.Int64 // Unix ns of the last measured request's end

	latency, ttfb, chunkDelay, startLag histogram

	mu       sync.Mutex
	errKinds map[string]int64
	firstErr string
}

func newGenerator(cfg config) *generator {
	conns := max(cfg.concurrency, cfg.maxInflight)
	return &generator{
		cfg: cfg,
		tr: &http.Transport{
			Proxy: nil, // the target is exactly -url, never a proxy from the environment
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
			DisableCompression:  true,
			WriteBufferSize:     16 << 10,
			ReadBufferSize:      16 << 10,
		},
		errKinds: map[string]int64{},
	}
}

// run sends the load and returns when every request it started has ended.
func (g *generator) run(ctx context.Context) {
	defer g.tr.CloseIdleConnections()
	g.start = time.Now()
	g.measureStart = g.start.Add(g.cfg.warmup)
	g.end = g.measureStart.Add(g.cfg.duration)
	if g.cfg.rate > 0 {
		g.runOpen(ctx)
	} else {
		g.runClosed(ctx)
	}
}

// runClosed is the closed model: each worker sends its next request when the previous
// one has ended, and latency runs from the actual send.
func (g *generator) runClosed(ctx context.Context) {
	var wg sync.WaitGroup
	for range g.cfg.concurrency {
		wg.Go(func() {
			w := g.newWorker()
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(g.end) {
					return
				}
				measured := !now.Before(g.measureStart)
				if measured && !g.claim() {
					return
				}
				w.do(ctx, now, measured)
			}
		})
	}
	wg.Wait()
}

// job is one scheduled request of the open model.
type job struct {
	sched    time.Time
	measured bool
}

// runOpen is the open model: request i is due at start + i/rate whether or not earlier
// ones have ended, and latency runs from the due time, so time spent waiting to be sent
// (for a free slot, or behind a slow dispatcher) counts, instead of being hidden the way
// a closed loop hides it (coordinated omission). Workers are started as needed up to
// maxInflight; a due request that finds all of them busy waits and is counted as late.
func (g *generator) runOpen(ctx context.Context) {
	jobs := make(chan job) // unbuffered: a send succeeds only into an idle worker
	var wg sync.WaitGroup
	workers := 0
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	interval := float64(time.Second) / g.cfg.rate
	for i := 0; ; i++ {
		sched := g.start.Add(time.Duration(float64(i) * interval))
		if !sched.Before(g.end) {
			return
		}
		if d := time.Until(sched); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		j := job{sched: sched, measured: !sched.Before(g.measureStart)}
		if j.measured && !g.claim() {
			return
		}
		select {
		case jobs <- j:
			continue
		default:
		}
		if workers < g.cfg.maxInflight {
			workers++
			wg.Go(func() {
				w := g.newWorker()
				w.do(ctx, j.sched, j.measured)
				for j := range jobs {
					w.do(ctx, j.sched, j.measured)
				}
			})
			continue
		}
		if j.measured {
			g.late.Add(1)
		}
		select {
		case jobs <- j:
		case <-ctx.Done():
			return
		}
	}
}

// claim takes a measured request from the -max-requests budget.
func (g *generator) claim() bool {
	return g.cfg.maxRequests <= 0 || g.claimed.Add(1) <= g.cfg.maxRequests
}

// worker holds one goroutine's reusable buffers.
type worker struct {
	g   *generator
	br  *bufio.Reader
	buf []byte
}

// maxLine is the longest SSE line parsed whole; the rest of a longer line is skipped,
// so a "loom_sent_ns" past this point is not seen (the event still counts).
const maxLine = 64 << 10

func (g *generator) newWorker() *worker {
	w := &worker{g: g, buf: make([]byte, 16<<10)}
	if g.cfg.stream {
		w.br = bufio.NewReaderSize(nil, maxLine)
	}
	return w
}

// do sends one request due at sched and records its outcome if measured.
// A request cut short because the run itself was cancelled (SIGINT) is not counted.
func (w *worker) do(parent context.Context, sched time.Time, measured bool) {
	g := w.g
	if measured && g.cfg.rate > 0 {
		g.startLag.record(int64(time.Since(sched)))
	}
	ctx, cancel := context.WithTimeout(parent, g.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.url, bytes.NewReader(g.cfg.body))
	if err != nil {
		g.fail(measured, "request", err)
		return
	}
	req.Header = g.cfg.header
	g.sent.Add(1)
	resp, err := g.tr.RoundTrip(req)
	if err != nil {
		g.fail(measured && parent.Err() == nil, errKind(ctx, err), err)
		return
	}
	g.answered.Add(1)
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		n, _ := io.ReadFull(resp.Body, w.buf[:min(len(w.buf), 512)])
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // keep the connection reusable
		g.fail(measured, "status_"+strconv.Itoa(resp.StatusCode),
			errors.New(resp.Status+": "+string(bytes.TrimSpace(w.buf[:n]))))
		return
	}

	var (
		ttfb   time.Duration
		chunks int
	)
	if g.cfg.stream {
		ttfb, chunks, err = w.readStream(resp.Body, sched, measured)
	} else {
		ttfb, err = w.readAll(resp.Body, sched)
	}
	now := time.Now()
	if err != nil {
		var se streamError
		kind := "read"
		if errors.As(err, &se) {
			kind = se.kind
		} else if ctx.Err() != nil {
			kind = errKind(ctx, ctx.Err())
		}
		g.fail(measured && parent.Err() == nil, kind, err)
		return
	}
	if !measured {
		return
	}
	g.requests.Add(1)
	g.ok.Add(1)
	g.chunks.Add(int64(chunks))
	g.latency.record(int64(now.Sub(sched)))
	g.ttfb.record(int64(ttfb))
	g.noteDone(now)
}

func (g *generator) noteDone(t time.Time) {
	ns := t.UnixNano()
	for {
		last := g.lastDone.Load()
		if ns <= last || g.lastDone.CompareAndSwap(last, ns) {
			return
		}
	}
}

func (g *generator) fail(measured bool, kind string, err error) {
	if !measured {
		return
	}
	g.requests.Add(1)
	g.noteDone(time.Now())
	g.mu.Lock()
	g.errKinds[kind]++
	if g.firstErr == "" {
		g.firstErr = err.Error()
	}
	g.mu.Unlock()
}

// errKind names a transport error for the report.
func errKind(ctx context.Context, err error) string {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_reset"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "transport"
}

// readAll reads a whole body into the worker's buffer, returning the time from sched to
// its first byte.
func (w *worker) readAll(body io.Reader, sched time.Time) (ttfb time.Duration, err error) {
	for {
		n, err := body.Read(w.buf)
		if n > 0 && ttfb == 0 {
			ttfb = time.Since(sched)
		}
		if err == io.EOF {
			return ttfb, nil
		}
		if err != nil {
			return ttfb, err
		}
	}
}

type streamError struct{ kind, msg string }

func (e streamError) Error() string { return e.msg }

var (
	dataPrefix  = []byte("data:")
	donePayload = []byte("[DONE]")
	errorPrefix = []byte(`{"error"`)
	sentField   = []byte(`"loom_sent_ns":`)
)

// readStream reads an SSE body line by line without copying, counting data events up to
// data: [DONE] and timing each event that carries "loom_sent_ns" (its receive time on
// this host's wall clock minus the stamp). It returns the time from sched to the first
// byte of the body.
func (w *worker) readStream(body io.Reader, sched time.Time, measured bool) (ttfb time.Duration, chunks int, err error) {
	g := w.g
	if w.br == nil {
		w.br = bufio.NewReaderSize(nil, maxLine)
	}
	br := w.br
	br.Reset(body)
	defer br.Reset(nil)
	if _, err := br.Peek(1); err != nil {
		if err == io.EOF {
			return 0, 0, streamError{"stream_incomplete", "empty stream body"}
		}
		return 0, 0, err
	}
	ttfb = time.Since(sched)
	done := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			payload, ok := dataPayload(line)
			switch {
			case !ok:
			case done:
				return ttfb, chunks, streamError{"stream_after_done", "event after data: [DONE]"}
			case bytes.Equal(payload, donePayload):
				done = true
			case bytes.HasPrefix(payload, errorPrefix):
				return ttfb, chunks, streamError{"stream_error", "error event: " + string(payload)}
			default:
				chunks++
				if sent, ok := sentNS(payload); ok && measured {
					g.chunkDelay.record(time.Now().UnixNano() - sent)
				}
			}
		}
		for err == bufio.ErrBufferFull { // a line longer than the buffer: skip its rest
			_, err = br.ReadSlice('\n')
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return ttfb, chunks, err
		}
	}
	if !done {
		return ttfb, chunks, streamError{"stream_incomplete", "stream ended without data: [DONE]"}
	}
	return ttfb, chunks, nil
}

// dataPayload returns the value of an SSE "data:" line, without the line end.
func dataPayload(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, dataPrefix)
	if !ok {
		return nil, false
	}
	rest = bytes.TrimSuffix(rest, []byte{'\n'})
	rest = bytes.TrimSuffix(rest, []byte{'\r'})
	rest = bytes.TrimPrefix(rest, []byte{' '})
	return rest, true
}

// sentNS finds "loom_sent_ns":<digits> in a chunk without decoding it.
func sentNS(payload []byte) (int64, bool) {
	i := bytes.Index(payload, sentField)
	if i < 0 {
		return 0, false
	}
	var v int64
	digits := 0
	for _, c := range payload[i+len(sentField):] {
		if c == ' ' && digits == 0 {
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false
		}
		v = v*10 + d
		digits++
	}
	return v, digits > 0
}
