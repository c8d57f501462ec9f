// Command embed mounts Loom in an ordinary http.Server: the README's embedding example.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	db, err := sqlitedb.Open(ctx, "loom.db") // or a pgxpool with tenancy.NewPostgresStore
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		return err
	}
	// Traces are sealed with this key; without one, loom.New refuses to trace.
	keyring, err := loomcrypto.ParseKeyring(getenv("LOOM_MASTER_KEY"))
	if err != nil {
		return fmt.Errorf("LOOM_MASTER_KEY: %w", err)
	}
	openai := provider.NewOpenAI(provider.OpenAIConfig{BaseURL: getenv("OPENAI_BASE_URL"), APIKey: getenv("OPENAI_API_KEY")})
	gw, err := loom.New(loom.Config{
		Store:   tenancy.NewSQLiteStore(db),
		Keyring: keyring,
		Routes:  []loom.Route{{Name: "openai", Provider: openai, Models: []string{"gpt-4o-mini"}}},
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewSQLiteSink(db, rollup.SQLite)}, SpoolDir: "spool"},
		// Optional: the tenant-scoped read API, GET /v1/traces and /v1/analytics/….
		Analytics: analytics.NewSQLiteStore(db),
	})
	if err != nil {
		return err
	}
	defer gw.Shutdown(context.WithoutCancel(ctx)) // on an early return; idempotent
	// The rollup step appends deltas; the folder keeps the analytics queries on few rows.
	go rollup.SQLiteFolder(db).Run(ctx, time.Second, func(err error) { log.Println(err) })
	if tenants, err := gw.Admin().ListTenants(ctx); err != nil {
		return err
	} else if len(tenants) == 0 { // first start: a tenant and its API key, shown once
		tenant, err := gw.Admin().CreateTenant(ctx, "demo")
		if err != nil {
			return err
		}
		key, _, err := gw.Admin().CreateKey(ctx, tenant.ID, "demo")
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "API key:", key)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", gw) // your mux, your http.Server
	ln, err := net.Listen("tcp", cmp.Or(getenv("ADDR"), "localhost:8080"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	fmt.Fprintf(stdout, "OpenAI base URL: http://%s/v1\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	if err := srv.Shutdown(context.WithoutCancel(ctx)); err != nil { // stop serving first,
		return err
	}
	return gw.Shutdown(context.WithoutCancel(ctx)) // then flush every trace
}
