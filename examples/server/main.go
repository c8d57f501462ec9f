// Command server runs Loom standalone: the gateway, its stores and trace sinks, health
// endpoints and graceful shutdown, configured from flags and the environment.
//
//	go run ./examples/server
//
// starts on :8080 with an embedded SQLite store under ./loom-data and, with no upstream
// configured, the built-in mock provider. See the README for every setting.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loom:", err)
		os.Exit(1)
	}
}

// run starts the server and serves until ctx ends, then shuts down gracefully; with
// "prices", "verify" or "deadletter" first it runs that command instead.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "prices":
			return runPrices(ctx, args[1:], getenv, stdout)
		case "verify":
			return runVerify(ctx, args[1:], getenv, stdout)
		case "deadletter":
			return runDeadLetter(ctx, args[1:], getenv, stdout)
		}
	}
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	s, err := Start(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "loom: shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	return s.Close(shutdownCtx)
}
