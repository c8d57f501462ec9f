package loom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/stream"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// strictRecordTimeout bounds how long a response waits for its trace's durable append in
// strict mode.
const strictRecordTimeout = 10 * time.Second

// exchange is one request's way through the gateway: what the trace needs, filled in as
// the request goes.
type exchange struct {
	g     *Gateway
	w     http.ResponseWriter
	r     *http.Request
	t     *tracing.Trace
	start time.Time
	sent  time.Time // the upstream request was handed to the provider
	last  time.Time // the upstream's last byte arrived
	// recorded is set once the trace is handed to the pipeline; from then on it is the
	// pipeline's, and the exchange no longer writes to it.
	recorded bool
	info     RequestInfo // what the trace came to, taken as it was handed over
	// upstreamErr is the kind of the upstream's failure, if it failed (see
	// upstreamErrorKind).
	upstreamErr string
	// propagate is the trace context header for the upstream request (nil without a
	// Config.Propagator).
	propagate http.Header
	// adapterUsage is the usage in full as a translating adapter read it (provider.Response.Usage).
	adapterUsage *provider.Usage
}

func (g *Gateway) chatCompletions(w http.ResponseWriter, r *http.Request) {
	start := g.cfg.Now()
	id, err := uuid.NewV7()
	if err != nil {
		writeError(w, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: "Could not allocate a request id."})
		return
	}
	t := &tracing.Trace{ID: id.String(), CreatedAt: start.UTC(), RequestID: r.Header.Get("X-Request-Id")}
	w.Header().Set("X-Request-Id", t.ID)
	principal, err := g.authenticate(r)
	if err != nil {
		// Nobody to attribute a trace to: the request is refused without one.
		a := toAPIError(err)
		if a.Status >= 500 {
			g.log.Error("authentication failed", "err", err)
		}
		writeError(w, a)
		g.metrics.observeUnrouted("chat_completions", a.Status)
		return
	}
	t.TenantID, t.APIKeyID = principal.TenantID, principal.KeyID
	x := &exchange{g: g, w: w, r: r, t: t, start: start}
	if g.cfg.Propagator != nil {
		x.propagate = continueTrace(g.cfg.Propagator, r, t)
	}
	g.metrics.inflight.Inc()
	x.serve()
	g.metrics.inflight.Dec()
	x.record()
	g.requestDone(x)
}

func (g *Gateway) authenticate(r *http.Request) (tenancy.Principal, error) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return tenancy.Principal{}, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "missing_api_key",
			Message: "You didn't provide an API key. Send it as 'Authorization: Bearer loom_…'."}
	}
	return g.auth.Authenticate(r.Context(), strings.TrimSpace(key))
}

// record hands the finished trace to the pipeline, once. The client may have left: the
// trace is still kept, so the wait (strict mode only) is bounded by its own timeout, not
// by the request's cancellation. In strict mode an error means the durable append was not
// confirmed (errNotDurable).
func (x *exchange) record() error {
	g := x.g
	if x.recorded {
		return nil
	}
	x.recorded = true
	if g.cfg.OnRequest != nil {
		x.info = requestInfo(x.t)
	}
	g.metrics.observeChat(x) // the last read of the trace before the pipeline owns it
	if g.traces == nil {
		return nil
	}
	ctx := context.WithoutCancel(x.r.Context())
	if g.cfg.Tracing.Strict {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, strictRecordTimeout)
		defer cancel()
	}
	if err := g.traces.Record(ctx, x.t); err != nil {
		g.log.Error("trace not kept", "trace_id", x.t.ID, "err", err)
		return fmt.Errorf("%w: %w", errNotDurable, err)
	}
	return nil
}

// commit, in strict mode, records the trace before the answer's last bytes leave (the
// whole JSON body, or a stream's [DONE]), so a client never holds an answer whose trace
// is not on disk. The trace is then what the upstream answered and Loom was about to
// send: a client that leaves during the last write is not marked aborted. An error means
// the append was not confirmed; the caller answers with it instead. Outside strict mode
// the trace is recorded after the answer, and commit does nothing.
func (x *exchange) commit() error {
	if !x.strict() {
		return nil
	}
	x.finish()
	return x.record()
}

func (x *exchange) serve() {
	g, r, t := x.g, x.r, x.t
	body, err := readAll(r.Body, r.ContentLength, g.cfg.MaxBodyBytes)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			x.discardBody()
		}
		x.fail(err)
		return
	}
	t.RequestBody = body
	req, err := provider.ParseChatRequest(body)
	if err != nil {
		x.fail(err)
		return
	}
	t.Model, t.Stream = req.Model, req.Stream
	route, model, err := g.routes.resolve(r.Context(), t.TenantID, req.Model)
	if err != nil {
		x.fail(err)
		return
	}
	t.Provider = route.Name

	up := &provider.Request{Model: model, Body: req.UpstreamBody(model), Stream: req.Stream, Header: r.Header, TraceHeader: x.propagate}
	ctx, cancel := context.WithTimeoutCause(r.Context(), g.cfg.UpstreamTimeout, errUpstreamTimeout)
	defer cancel()
	var retries atomic.Int32
	ctx = provider.CountRetries(ctx, &retries)
	x.sent = g.cfg.Now()
	resp, err := route.Provider.Chat(ctx, up)
	x.last = g.cfg.Now()
	t.TTFBUS = x.last.Sub(x.start).Microseconds()
	t.UpstreamRetries = int(retries.Load())
	if err != nil {
		x.fail(upstreamCause(ctx, err))
		return
	}
	defer resp.Body.Close()
	x.adapterUsage = resp.Usage
	h := x.w.Header()
	for _, k := range passedUpstreamHeaders {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if req.Stream {
		x.relayStream(ctx, req, resp)
	} else {
		x.relayJSON(ctx, req, resp)
	}
}

// upstreamCause sorts an upstream call's failure: a timeout, the client leaving, the
// upstream's own error answer, or an upstream that could not be reached.
func upstreamCause(ctx context.Context, err error) error {
	var ue *provider.UpstreamError
	switch {
	case errors.Is(context.Cause(ctx), errUpstreamTimeout):
		return errUpstreamTimeout
	case errors.Is(err, context.Canceled), errors.As(err, &ue):
		return err
	}
	return fmt.Errorf("%w: %w", errUnreachable, err)
}

// strict reports whether the answer waits for its trace's durable append.
func (x *exchange) strict() bool { return x.g.traces != nil && x.g.cfg.Tracing.Strict }

// fail answers with the error and notes it in the trace.
func (x *exchange) fail(err error) {
	x.upstreamErr = upstreamErrorKind(err)
	a := toAPIError(err)
	if a.Status >= 500 && a.Status != http.StatusGatewayTimeout {
		x.g.log.Warn("upstream failure", "trace_id", x.t.ID, "provider", x.t.Provider, "err", err)
	}
	x.t.Status, x.t.ErrorType = a.Status, a.Type
	x.t.ResponseBody = a.body()
	x.t.UsageSource = tracing.UsageMissing
	if x.r.Context().Err() != nil {
		x.t.ClientAborted = true
		x.finish()
		return
	}
	if err := x.commit(); err != nil {
		a = toAPIError(err)
	}
	writeError(x.w, a)
	x.finish()
}

// maxDecodedBody bounds an answer Loom decompresses to read it whole: a small compressed
// body must not unpack into gigabytes.
const maxDecodedBody = 64 << 20

// final reports whether resp is a final (2xx) answer, and otherwise fails the exchange: a
// provider or RoundTripper may hand on an interim 1xx response, which must never become
// the client's answer.
func (x *exchange) final(resp *provider.Response) bool {
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return true
	}
	x.fail(fmt.Errorf("%w: status %d", errUpstreamProtocol, resp.StatusCode))
	return false
}

func (x *exchange) relayJSON(ctx context.Context, req *provider.ChatRequest, resp *provider.Response) {
	if !x.final(resp) {
		return
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "text/event-stream") {
		// A stream where JSON was asked for: relayed and metered as the stream it is.
		x.relayStream(ctx, req, resp)
		return
	}
	enc := resp.Header.Get("Content-Encoding")
	src, decoded := provider.DecodeBody(enc, resp.Body)
	n, limit := resp.ContentLength, int64(-1)
	if src != resp.Body {
		n, limit = -1, maxDecodedBody
	}
	body, err := readAll(src, n, limit)
	x.last = x.g.cfg.Now()
	switch {
	case errors.Is(err, errBodyTooLarge):
		x.fail(fmt.Errorf("%w: decoded answer over %d bytes", errUpstreamProtocol, limit))
		return
	case errors.Is(err, provider.ErrCorruptBody):
		x.fail(fmt.Errorf("%w: %w", errUpstreamProtocol, err))
		return
	case err != nil:
		x.fail(upstreamCause(ctx, err))
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	if decoded {
		c := provider.ReadCompletion(body)
		x.setUsage(c.Usage, string(c.Model))
		x.t.FinishReasons = c.FinishReasons()
		if c.HasError {
			x.t.ErrorType = "upstream_error" // a 200 whose body is an error
			if c.Usage == nil {
				x.t.UsageSource = tracing.UsageMissing // nothing was generated to count
			}
		}
	} else {
		h.Set("Content-Encoding", enc)         // the bytes as they came, labelled as they came
		x.t.UsageSource = tracing.UsageMissing // unreadable: nothing to count
	}
	x.t.Status = resp.StatusCode
	x.capture(body)
	if err := x.commit(); err != nil {
		h.Del("Content-Encoding")
		writeError(x.w, toAPIError(err))
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(resp.StatusCode)
	if _, err := x.w.Write(body); err != nil && !x.recorded {
		x.t.ClientAborted = true
	}
	x.finish()
}

func (x *exchange) relayStream(ctx context.Context, req *provider.ChatRequest, resp *provider.Response) {
	if !x.final(resp) {
		return
	}
	enc := resp.Header.Get("Content-Encoding")
	src, decoded := provider.DecodeBody(enc, resp.Body)
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	if !decoded {
		h.Set("Content-Encoding", enc)
	}
	x.w.WriteHeader(http.StatusOK)
	x.t.Status = http.StatusOK
	x.g.metrics.streams.Inc()
	defer x.g.metrics.streams.Dec()
	opts := stream.RelayOptions{
		StripUsage: req.Stream && !req.IncludeUsage,
		Capture:    x.g.cfg.MaxCaptureBytes,
		Now:        x.g.cfg.Now,
	}
	if !decoded {
		// Unreadable (an encoding Loom cannot decode): passed on as it comes, with no
		// usage and no [DONE] to look for or hold back.
		x.streamResult(ctx, stream.Pass(x.w, src, opts), false)
		x.finish()
		return
	}
	if x.strict() {
		// [DONE] waits for the durable append of the trace of everything before it.
		opts.BeforeDone = func(res stream.Result) error {
			x.streamResult(ctx, res, true)
			return x.commit()
		}
	}
	res := stream.Relay(x.w, src, opts)
	if x.recorded {
		if res.BeforeDoneErr != nil {
			stream.WriteError(x.w, toAPIError(res.BeforeDoneErr).body())
		}
		return
	}
	x.streamResult(ctx, res, true)
	x.finish()
}

// streamResult notes what the relay learned in the trace and, when the upstream broke
// off, tells the client with an error event (only into a stream it can read: decoded).
func (x *exchange) streamResult(ctx context.Context, res stream.Result, decoded bool) {
	x.last = res.End
	if !res.FirstEvent.IsZero() {
		x.t.TTFBUS = res.FirstEvent.Sub(x.start).Microseconds()
	}
	x.t.ResponseBody, x.t.ResponseTruncated = res.Captured, res.Truncated
	if decoded {
		x.setUsage(res.Usage, res.Model)
		x.t.FinishReasons = res.FinishReasons
	} else {
		x.t.UsageSource = tracing.UsageMissing // unreadable: nothing to count
	}
	switch {
	case res.WriteErr != nil || (res.ReadErr != nil && x.r.Context().Err() != nil):
		x.t.ClientAborted = true
	case res.ReadErr != nil || (decoded && !res.Done && !res.UpstreamError):
		// The stream broke off, or ended without its [DONE]: the client must not take
		// it for a whole answer. It has started, so the error can only travel as an
		// event (not into bytes the client cannot decode).
		cause := errStreamInterrupted
		if errors.Is(context.Cause(ctx), errUpstreamTimeout) {
			cause = errUpstreamTimeout
		}
		x.upstreamErr = upstreamErrorKind(cause)
		a := toAPIError(cause)
		x.t.ErrorType = a.Type
		if decoded {
			stream.WriteError(x.w, a.body())
		}
	case res.UpstreamError:
		x.t.ErrorType = "upstream_error"
	}
}

// setUsage notes the usage the upstream reported (in full, where a translating adapter
// read more than the OpenAI format carries) or, when it reported none, marks the usage
// for estimation: the tokens are counted off the request path (see coster.price).
func (x *exchange) setUsage(u *provider.Usage, served string) {
	t := x.t
	t.ServedModel = served
	if u == nil {
		t.UsageSource = tracing.UsageEstimated
		return
	}
	if x.adapterUsage != nil {
		u = x.adapterUsage
	}
	setReportedUsage(t, u)
}

func (x *exchange) capture(b []byte) {
	if n := x.g.cfg.MaxCaptureBytes; len(b) > n {
		b, x.t.ResponseTruncated = b[:n], true
	}
	x.t.ResponseBody = b
}

// finish stamps the timings: Loom's own time is everything but the wait for the upstream.
// Once the trace is recorded (strict mode), its timings stand.
func (x *exchange) finish() {
	if x.recorded {
		return
	}
	end := x.g.cfg.Now()
	t := x.t
	t.LatencyUS = end.Sub(x.start).Microseconds()
	if x.sent.IsZero() {
		t.OverheadUS = t.LatencyUS
		return
	}
	t.OverheadUS = (x.sent.Sub(x.start) + end.Sub(x.last)).Microseconds()
}

// discardBody reads and drops the rest of a body over MaxBodyBytes, up to another
// MaxBodyBytes (a body of up to twice the limit is read to its end), so a client that
// sends its whole body before it reads the answer (curl without Expect, Python's
// requests) gets the 413 instead of a connection reset. A longer body is not read further:
// the connection is closed after the 413, and such a client may still see a reset.
func (x *exchange) discardBody() {
	limit := x.g.cfg.MaxBodyBytes
	left := limit // no length declared: readAll stopped one byte past the limit
	if n := x.r.ContentLength; n > 0 {
		left = n // declared too long: readAll read none of it
	}
	if left > 2*limit {
		x.w.Header().Set("Connection", "close")
		return
	}
	if _, err := io.CopyN(io.Discard, x.r.Body, left+1); err != io.EOF {
		x.w.Header().Set("Connection", "close") // more is left, or reading failed
	}
}

// readAll reads r to its end. n is its length when known (-1 otherwise), so the buffer is
// sized once; with limit ≥ 0, more than limit bytes is errBodyTooLarge.
func readAll(r io.Reader, n, limit int64) ([]byte, error) {
	if limit >= 0 {
		if n > limit {
			return nil, errBodyTooLarge
		}
		r = io.LimitReader(r, limit+1)
	}
	size := n + 1 // room to see the end without growing
	if n < 0 || n > 64<<20 {
		size = 64 << 10
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if limit >= 0 && int64(len(buf)) > limit {
		return nil, errBodyTooLarge
	}
	return buf, nil
}

func (g *Gateway) listModels(w http.ResponseWriter, r *http.Request) {
	p, err := g.authenticate(r)
	if err != nil {
		a := toAPIError(err)
		writeError(w, a)
		g.metrics.observeUnrouted("models", a.Status)
		return
	}
	models, err := g.routes.models(r.Context(), p.TenantID)
	if err != nil {
		g.log.Error("list models", "err", err)
		writeError(w, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: "Could not list models."})
		g.metrics.observeUnrouted("models", http.StatusInternalServerError)
		return
	}
	g.metrics.observeUnrouted("models", http.StatusOK)
	if models == nil {
		models = []modelEntry{}
	}
	body, _ := json.Marshal(struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{"list", models})
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
