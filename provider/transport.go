package provider

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport is an http.RoundTripper for upstream calls that does all of its work on the
// calling goroutine: it writes the request and reads the response on a pooled keep-alive
// HTTP/1.1 connection. http.Transport hands every request to a connection's write
// goroutine and every response back from its read goroutine; on a busy or virtual
// machine each of those wake-ups costs tens of microseconds, which is most of what a
// gateway adds to a fast upstream. Here, a request costs no goroutine switch at all.
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

	mu   sync.Mutex
	idle map[string][]*upConn
}

var _ http.RoundTripper = (*Transport)(nil)

// upConn is one upstream connection with its buffers.
type upConn struct {
	net.Conn
	key    string
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

// errRetry marks a failure on a reused connection before any response byte: the
// upstream closed the idle connection, and the request may be sent again on a new one.
var errRetry = errors.New("provider: idle connection closed by upstream")

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
		if errors.Is(err, errRetry) && attempt == 0 && (req.Body == nil || req.GetBody != nil) {
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// exchange writes req on c and reads the response header.
func (t *Transport) exchange(c *upConn, req *http.Request, reused bool) (*http.Response, error) {
	if err := req.Write(c.bw); err != nil {
		return nil, retryable(err, reused)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, retryable(err, reused)
	}
	if reused {
		// A closed idle connection shows as an immediate end of stream.
		if _, err := c.br.Peek(1); err != nil {
			return nil, retryable(err, reused)
		}
	}
	return http.ReadResponse(c.br, req)
}

func retryable(err error, reused bool) error {
	if reused {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return err
}

// conn returns an idle connection to the request's host, or dials one.
func (t *Transport) conn(ctx context.Context, req *http.Request) (*upConn, bool, error) {
	key := req.URL.Scheme + "://" + req.URL.Host
	idleTimeout := t.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = 90 * time.Second
	}
	now := time.Now()
	t.mu.Lock()
	for list := t.idle[key]; len(list) > 0; list = t.idle[key] {
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		if now.Sub(c.idleAt) < idleTimeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	t.mu.Unlock()

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
	var nc net.Conn
	var err error
	if req.URL.Scheme == "https" {
		cfg := t.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		nc, err = (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", addr)
	} else {
		nc, err = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, false, err
	}
	return &upConn{Conn: nc, key: key, br: bufio.NewReaderSize(nc, 8<<10), bw: bufio.NewWriterSize(nc, 4<<10)}, false, nil
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
		b.release(b.reuse)
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
