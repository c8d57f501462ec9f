// Command reverseproxy is the reference point of Loom's overhead benchmark: a bare
// net/http/httputil.ReverseProxy (no auth, no tracing, no parsing) in front of one
// upstream, so bench/overhead can show what any Go proxy costs next to what the gateway
// adds on top of that.
//
//	go run ./bench/reverseproxy -addr 127.0.0.1:9091 -upstream http://127.0.0.1:9090
//
// Streams are flushed after every write (FlushInterval -1), the transport keeps up to
// 256 idle connections to the upstream, so a load of 64 concurrent requests reuses its
// connections, and requests are served full duplex (see fullDuplex). It prints "reverseproxy: listening on http://HOST:PORT" once it
// accepts connections, and shuts down gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
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
		fmt.Fprintln(os.Stderr, "reverseproxy:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts down gracefully (bounded to 5s).
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("reverseproxy", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:9091", "listen address (port 0 picks a free port)")
	upstream := fs.String("upstream", "", "upstream base URL, e.g. http://127.0.0.1:9090")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	proxy, err := newProxy(*upstream)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           fullDuplex(proxy),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Fprintf(stdout, "reverseproxy: listening on http://%s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return nil
}

// fullDuplex lets h read the request body after it has started the response. Without
// it the HTTP/1 server closes the body when the proxy writes the upstream's response
// headers, and the transport's final read of the body it is still sending (the check
// that it is no longer than its Content-Length) can then fail and tear down the upstream
// connection mid-stream: the client gets a truncated stream, the proxy logs "read error
// during body copy: use of closed network connection" (golang/go#40747).
func fullDuplex(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		h.ServeHTTP(w, r)
	})
}

// newProxy is httputil.NewSingleHostReverseProxy to upstream, flushing every write and
// with a connection pool sized for the benchmark's concurrency.
func newProxy(upstream string) (*httputil.ReverseProxy, error) {
	if upstream == "" {
		return nil, errors.New("-upstream is required")
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("-upstream: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-upstream %q: want http:// or https:// and a host", upstream)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the upstream is exactly -upstream, never a proxy from the environment
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 256
	proxy.Transport = tr
	return proxy, nil
}
