// Command mockupstream is a fast, canned OpenAI-compatible upstream for benchmarks: Loom's
// overhead is the gateway's numbers minus this server's numbers measured directly.
//
//	go run ./examples/mockupstream -addr 127.0.0.1:9090 -chunks 16 -chunk-bytes 8
//
// It prints "mockupstream: listening on http://HOST:PORT" once it accepts connections
// (-addr 127.0.0.1:0 picks a free port) and stops on SIGINT or SIGTERM. The answers are
// described in package mockapi; streamed chunks carry "loom_sent_ns", the wall-clock time
// each was written, which examples/loadgen turns into per-chunk delays.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/loom-gateway/loom/examples/mockupstream/mockapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "mockupstream:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts down gracefully (bounded to 5s).
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mockupstream", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:9090", "listen address (port 0 picks a free port)")
	latency := fs.Duration("latency", 0, "fixed delay before answering")
	chunks := fs.Int("chunks", 16, "content chunks per stream (the non-streaming content has the same length)")
	chunkDelay := fs.Duration("chunk-delay", 0, "delay before each content chunk of a stream")
	chunkBytes := fs.Int("chunk-bytes", 8, "bytes of content per chunk")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *chunks < 1 || *chunkBytes < 1 || *latency < 0 || *chunkDelay < 0 {
		return errors.New("-chunks and -chunk-bytes must be at least 1, delays not negative")
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: mockapi.New(mockapi.Config{
			Latency:    *latency,
			Chunks:     *chunks,
			ChunkDelay: *chunkDelay,
			ChunkBytes: *chunkBytes,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// No WriteTimeout: a stream lasts chunks × chunk-delay, which the flags make
		// arbitrarily long; a client that leaves cancels the request context instead.
		IdleTimeout: 2 * time.Minute,
	}
	fmt.Fprintf(stdout, "mockupstream: listening on http://%s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
