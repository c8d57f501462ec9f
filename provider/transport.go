package provider

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is an http.RoundTripper for upstream calls that does all of its work on the
// calling goroutine: it writes the request and reads the response on a pooled keep-alive
// HTTP/1.1 connection. http.Transport hands every request to a connection's write
// goroutine and every response back from its read goroutine; on a busy or virtual
// machine each of those wake-ups costs tens of microseconds, which is most of what a
// gateway adds to a fast upstream. Here, a request costs no goroutine switch at all.
//
// A pooled connection is shared by every tenant whose requests use the route, so an
// answer must never outlive its exchange. A connection is reused only when the previous
// response ended exactly where its framing said, with nothing buffered and nothing
// waiting on the socket, and it is checked again, without blocking, just before the
// next request is written on it: a connection the upstream closed while idle, or on
// which it sent anything unasked for, is closed instead. Interim 1xx responses are read
// and skipped (at most five, as net/http does); 101 is refused; response headers are
// bounded by MaxResponseHeaderBytes.
//
// A request is sent again on a new connection only when a reused connection failed
// before the request was written in full (the upstream cannot have acted on it), or
// before any response byte when the request carries an Idempotency-Key or
// X-Idempotency-Key header (net/http's rule). A fully written completion request is never
// re-sent: the upstream may already be generating, and billing, it. CountRetries lets a
// caller see the re-sends.
//
// It speaks HTTP/1.1 over TCP or TLS (every LLM provider accepts it), with no proxy
// support and no HTTP/2; use NewTransport where those are needed. A context that ends
// interrupts the connection's reads and writes at once (the connection is then closed).
// Transport starts no goroutines; CloseIdleConnections closes what it keeps.
type Transport struct {
	// DialTimeout bounds connecting (TCP and TLS handshake). If zero, 10 seconds.
	DialTimeout time.Duration
	// TLSConfig is used for https upstreams. If nil, the default configuration is used
	// with the URL's host as server name.
	TLSConfig *tls.Config
	// MaxIdlePerHost bounds the idle connections kept per upstream. If zero, 512.
	MaxIdlePerHost int
	// IdleTimeout is how long an idle connection is kept. If zero, 90 seconds.
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds the bytes read before a response body (interim
	// responses included). If zero, 1 MiB.
	MaxResponseHeaderBytes int64

	mu   sync.Mutex
	idle map[string][]*upConn
}

var _ http.RoundTripper = (*Transport)(nil)

// max1xx is how many interim responses are skipped before the exchange is abandoned.
const max1xx = 5

// upConn is one upstream connection with its buffers. Reads go through readLimit, which
// bounds the response header.
type upConn struct {
	net.Conn
	raw       net.Conn // the TCP connection under TLS (Conn itself without TLS)
	tls       bool
	key       string
	br        *bufio.Reader
	bw        *bufio.Writer
	idleAt    time.Time
	readLimit int64
}

// Read reads from the connection, within readLimit.
func (c *upConn) Read(p []byte) (int, error) {
	if c.readLimit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.Conn.Read(p)
	c.readLimit -= int64(n)
	return n, err
}

var (
	errHeaderTooLarge = errors.New("provider: upstream response header too large")
	// errNotWritten marks a failure on a reused connection that may be retried on a new
	// one: the request was not written in full, or (for a request with an idempotency
	// key) no byte of a response arrived.
	errNotWritten = errors.New("provider: connection failed before the request was sent")
)

type retriesKey struct{}

// CountRetries returns a context under which Transport adds to n each time it sends the
// request again on a new connection, so the caller can note it (the gateway puts it in
// the trace).
func CountRetries(ctx context.Context, n *atomic.Int32) context.Context {
	return context.WithValue(ctx, retriesKey{}, n)
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return nil, fmt.Errorf("provider: unsupported scheme %q", req.URL.Scheme)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		c, reused, err := t.conn(ctx, req)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		resp, err := t.exchange(c, req, reused)
		if err == nil {
			resp.Body = &upBody{rc: resp.Body, c: c, t: t, stop: stop, reuse: !resp.Close}
			return resp, nil
		}
		stop()
		c.Close()
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, cerr
		}
		if !errors.Is(err, errNotWritten) || attempt > 0 || (req.Body != nil && req.GetBody == nil) {
			return nil, err
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		if n, ok := ctx.Value(retriesKey{}).(*atomic.Int32); ok {
			n.Add(1)
		}
	}
}

// exchange writes req on c and reads the response header, skipping interim responses.
func (t *Transport) exchange(c *upConn, req *http.Request, reused bool) (*http.Response, error) {
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return nil, notWritten(err, reused)
	}
	limit := t.MaxResponseHeaderBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	c.readLimit = limit
	defer func() { c.readLimit = math.MaxInt64 }()
	if reused && idempotent(req) {
		if _, err := c.br.Peek(1); err != nil {
			return nil, notWritten(err, reused)
		}
	}
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			if c.readLimit <= 0 {
				return nil, fmt.Errorf("%w (over %d bytes)", errHeaderTooLarge, limit)
			}
			return nil, fmt.Errorf("provider: read response: %w", err)
		}
		switch {
		case resp.StatusCode >= 200:
			return resp, nil
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("provider: upstream switched protocols unasked (101)")
		case n == max1xx-1:
			return nil, fmt.Errorf("provider: upstream sent more than %d interim responses", max1xx)
		}
		// An interim response (100 Continue, 103 Early Hints) has no body: the final
		// response follows on the same connection.
	}
}

func notWritten(err error, reused bool) error {
	if reused {
		return fmt.Errorf("%w: %w", errNotWritten, err)
	}
	return fmt.Errorf("provider: write request: %w", err)
}

// idempotent reports whether a request may be re-sent after it was written in full: it
// carries an idempotency key, by net/http's convention.
func idempotent(req *http.Request) bool {
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// conn returns a clean idle connection to the request's host, or dials one.
func (t *Transport) conn(ctx context.Context, req *http.Request) (*upConn, bool, error) {
	key := req.URL.Scheme + "://" + req.URL.Host
	idleTimeout := t.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = 90 * time.Second
	}
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		t.mu.Unlock()
		if now.Sub(c.idleAt) < idleTimeout && c.quiet() {
			return c, true, nil
		}
		c.Close()
	}

	timeout := t.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := req.URL.Host
	if req.URL.Port() == "" {
		port := "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(req.URL.Hostname(), port)
	}
	raw, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &upConn{Conn: raw, raw: raw, key: key, readLimit: math.MaxInt64}
	if req.URL.Scheme == "https" {
		cfg := t.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, false, err
		}
		c.Conn, c.tls = tc, true
	}
	c.br, c.bw = bufio.NewReaderSize(c, 8<<10), bufio.NewWriterSize(c.Conn, 4<<10)
	return c, false, nil
}

// quiet reports, without blocking, that nothing has arrived on an idle connection since
// its last response ended: no bytes (an unsolicited or duplicated response, bytes past
// the body) and no end of stream (the upstream closed it while it was idle).
func (c *upConn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.tls {
		// Decrypted bytes kept inside the TLS connection show to a read whose deadline
		// has passed; without any, that read fails at once without touching the socket.
		c.SetReadDeadline(time.Unix(1, 0))
		_, err := c.br.Peek(1)
		c.SetReadDeadline(time.Time{})
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return false
		}
	}
	return socketQuiet(c.raw)
}

// put returns a connection whose response was read to its end to the idle pool.
func (t *Transport) put(c *upConn) {
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = 512
	}
	c.idleAt = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*upConn{}
	}
	if len(t.idle[c.key]) < max {
		t.idle[c.key] = append(t.idle[c.key], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the connections kept for reuse.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

// upBody is a response body that gives its connection back to the pool when read to its
// end, and closes it when abandoned before.
type upBody struct {
	rc    io.ReadCloser
	c     *upConn
	t     *Transport
	stop  func() bool
	reuse bool
	done  bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		// Bytes already read past the body's end belong to no request.
		b.release(b.reuse && b.c.br.Buffered() == 0)
	} else if err != nil {
		b.release(false)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.release(false)
	return nil
}

func (b *upBody) release(reuse bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && reuse {
		b.t.put(b.c)
		return
	}
	b.c.Close()
}
