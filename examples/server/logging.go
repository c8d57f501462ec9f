package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/loom-gateway/loom"
)

// newLogger writes everything the server says to w (stderr), with timestamps, as text or
// JSON (LOOM_LOG_FORMAT) from LOOM_LOG_LEVEL up.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// accessLog counts the requests in flight (for a forced exit to report) and, when log is
// not nil, writes one INFO line per request: what the gateway learned about it (through
// loom.Config.OnRequest, note) with what the wire saw. Never a key or a body.
type accessLog struct {
	log      *slog.Logger // nil: access log off
	inflight atomic.Int64
	// warn gets a line for each upstream failure, naming the upstream (its base URL by
	// route name in upstreams), whether the access log is on or not.
	warn      *slog.Logger
	upstreams map[string]string
}

type accessKey struct{}

// note is the gateway's OnRequest hook: it fills in the request's access entry.
func (a *accessLog) note(r *http.Request, info loom.RequestInfo) {
	if e, ok := r.Context().Value(accessKey{}).(*loom.RequestInfo); ok {
		*e = info
	}
	if info.Status >= 500 && info.Provider != "" && !info.ClientAborted {
		a.warn.Warn("upstream failure", "status", info.Status, "provider", info.Provider,
			"upstream", a.upstreams[info.Provider], "model", clip(info.Model), "trace_id", info.TraceID)
	}
}

func (a *accessLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		if a.log == nil || !a.log.Enabled(r.Context(), slog.LevelInfo) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		info := &loom.RequestInfo{}
		rw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		body := &countingBody{ReadCloser: r.Body}
		r = r.WithContext(context.WithValue(r.Context(), accessKey{}, info))
		r.Body = body
		next.ServeHTTP(rw, r)
		traceID := info.TraceID
		if traceID == "" {
			traceID = w.Header().Get("X-Request-Id")
		}
		a.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", clip(r.URL.Path)),
			slog.Int("status", rw.status),
			slog.String("model", clip(info.Model)),
			slog.String("provider", info.Provider),
			slog.String("tenant_id", info.TenantID),
			slog.String("key_id", info.KeyID),
			slog.Duration("latency", time.Since(start)),
			slog.Duration("overhead", info.Overhead),
			slog.Int64("bytes_in", body.n),
			slog.Int64("bytes_out", rw.bytes),
			slog.String("trace_id", traceID),
			slog.Bool("client_aborted", info.ClientAborted),
		)
	})
}

// countingWriter notes the status and counts the bytes written. It keeps Flush (and
// Unwrap for http.ResponseController), so streams are not buffered.
type countingWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *countingWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// clip bounds a client-chosen string in a log line (a model name may be megabytes long);
// the handlers escape what is not printable.
func clip(s string) string {
	const limit = 256
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
