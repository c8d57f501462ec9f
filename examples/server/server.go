package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/propagation"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// Server is a running standalone gateway.
type Server struct {
	Gateway *loom.Gateway
	// Addr is the address the server listens on (with the real port when :0 was asked).
	Addr string
	// BootstrapKey is the key printed on first start ("" when the store had tenants).
	BootstrapKey string

	http      *http.Server
	serving   chan error
	closeOnce sync.Once
	closeErr  error
	ready     atomic.Bool
	ping      func(context.Context) error
	closers   []func() error

	// The trace database, for the ledger's checkpointer.
	db      *sql.DB
	dialect string
}

// Start opens the stores, builds the gateway and starts serving.
func Start(ctx context.Context, cfg config, stdout io.Writer) (_ *Server, err error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := &Server{serving: make(chan error, 1)}
	defer func() {
		if err != nil {
			if s.Gateway != nil {
				s.Gateway.Shutdown(ctx)
			}
			s.closeAll()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}

	keyring, err := openKeyring(cfg, stdout)
	if err != nil {
		return nil, err
	}
	var (
		store tenancy.Store
		sink  tracing.Sink
		reads analytics.Store
	)
	if cfg.DatabaseURL != "" {
		store, sink, reads, err = s.openPostgres(ctx, cfg.DatabaseURL)
	} else {
		store, sink, reads, err = s.openSQLite(ctx, filepath.Join(cfg.DataDir, "loom.db"))
	}
	if err != nil {
		return nil, err
	}
	if err := s.startLedger(cfg, stdout, log); err != nil {
		return nil, err
	}
	prices, err := loadPrices(cfg.PricesFile)
	if err != nil {
		return nil, err
	}
	prices = prices.WithAliases(cfg.AzureDeploymentModels)

	routes := upstreamRoutes(cfg)
	logUnpriced(log, routes, prices) // the built-in mock below has no price to miss
	if len(routes) == 0 {
		routes = []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{ChunkDelay: 20 * time.Millisecond}), Models: []string{"mock-1"}}}
		fmt.Fprintln(stdout, "loom: no upstream configured (OPENAI_API_KEY, OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT, ANTHROPIC_API_KEY): serving the built-in mock provider as model \"mock-1\"")
	}
	gcfg := loom.Config{Store: store, Routes: routes, Keyring: keyring, Prices: prices, Logger: log, Analytics: reads, KeySetRefresh: cfg.KeySetRefresh,
		Metrics: metricsRegistry()}
	if cfg.Tracing {
		gcfg.Tracing = tracing.PipelineConfig{
			Sinks:    []tracing.Sink{sink},
			SpoolDir: filepath.Join(cfg.DataDir, "spool"),
			Strict:   cfg.StrictTraces,
		}
		if cfg.OTLPProtocol != "" {
			otel, err := otlpSink(ctx, cfg.OTLPProtocol, cfg)
			if err != nil {
				return nil, err
			}
			gcfg.Tracing.Sinks = append(gcfg.Tracing.Sinks, otel)
			gcfg.Propagator = propagation.TraceContext{}
		}
	}
	gw, err := loom.New(gcfg)
	if err != nil {
		return nil, err
	}
	s.Gateway = gw

	if s.BootstrapKey, err = bootstrap(ctx, gw.Admin(), cfg.BootstrapKey); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !s.ready.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if err := s.ping(ctx); err != nil {
			// Keys and tenant providers read before the outage are still answered (and
			// traces spooled) until StaleUntil: taking the replica out of the load
			// balancer would turn a store outage into a full one.
			if until := gw.StoreStats().StaleUntil; time.Now().Before(until) {
				fmt.Fprintf(w, "degraded: store unreachable; keys already read are answered until %s\n", until.UTC().Format(time.RFC3339))
				return
			}
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", gw.Metrics())
	mux.Handle("/v1/", gw)
	mux.Handle("/", analytics.Dashboard())

	if cfg.PprofAddr != "" {
		if err := s.servePprof(cfg.PprofAddr, stdout); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.Addr = ln.Addr().String()
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { s.serving <- s.http.Serve(ln) }()
	s.ready.Store(true)

	switch {
	case s.BootstrapKey != "" && cfg.BootstrapKey != "":
		// The operator chose the key: it is not echoed where logs collect stdout.
		fmt.Fprintf(stdout, "loom: created tenant \"default\" with the API key from LOOM_BOOTSTRAP_KEY (%s…)\n", s.BootstrapKey[:len(tenancy.KeyPrefix)+4])
	case s.BootstrapKey != "":
		fmt.Fprintf(stdout, "loom: created tenant \"default\" with API key (shown once, keep it):\n\n    %s\n\n", s.BootstrapKey)
	}
	fmt.Fprintf(stdout, "loom: listening on http://%s (dashboard http://%s/, OpenAI base URL http://%s/v1)\n", s.Addr, displayAddr(s.Addr), displayAddr(s.Addr))
	return s, nil
}

// displayAddr is addr as a client on this machine would dial it.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// Close stops accepting, lets in-flight requests finish (bounded by ctx), flushes every
// trace and closes the stores. Later calls return the first call's result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Server) close(ctx context.Context) error {
	s.ready.Store(false)
	// Streams may take half the time; the trace pipeline keeps the rest.
	reqCtx, cancel := loom.RequestShare(ctx)
	defer cancel()
	err := s.http.Shutdown(reqCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.http.Close() // streams still open past the bound are cut
	}
	if serr := <-s.serving; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if gerr := s.Gateway.Shutdown(ctx); gerr != nil {
		err = errors.Join(err, gerr)
	}
	return errors.Join(err, s.closeAll())
}

// servePprof serves the runtime profiles on their own listener (LOOM_PPROF_ADDR), never
// on the gateway's address.
func (s *Server) servePprof(addr string, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("LOOM_PPROF_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	s.closers = append(s.closers, srv.Close)
	fmt.Fprintf(stdout, "loom: profiles on http://%s/debug/pprof/\n", ln.Addr())
	return nil
}

// closeAll releases what Start opened, last opened first.
func (s *Server) closeAll() error {
	var err error
	for i := len(s.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, s.closers[i]())
	}
	s.closers = nil
	return err
}

func (s *Server) openSQLite(ctx context.Context, path string) (tenancy.Store, tracing.Sink, analytics.Store, error) {
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, nil, nil, err
	}
	s.closers = append(s.closers, db.Close)
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		return nil, nil, nil, err
	}
	s.ping = db.PingContext
	s.db, s.dialect = db, ledger.SQLite
	return tenancy.NewSQLiteStore(db), tracing.NewSQLiteSink(db, ledger.AppendSQLite), analytics.NewSQLiteStore(db), nil
}

func (s *Server) openPostgres(ctx context.Context, url string) (tenancy.Store, tracing.Sink, analytics.Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	s.closers = append(s.closers, func() error { pool.Close(); return nil })
	db := stdlib.OpenDBFromPool(pool)
	s.closers = append(s.closers, db.Close)
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		return nil, nil, nil, err
	}
	sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{ledger.AppendPostgres}})
	if err != nil {
		return nil, nil, nil, err
	}
	s.ping = pool.Ping
	s.db, s.dialect = db, ledger.Postgres
	return tenancy.NewPostgresStore(pool), sink, analytics.NewPostgresStore(pool), nil
}

// openKeyring reads LOOM_MASTER_KEY. Without it, the embedded default keeps a generated
// key in the data directory; with PostgreSQL (a production deployment) a missing key is
// an error, since bodies sealed with a key file on one machine could not be read by
// another replica.
func openKeyring(cfg config, stdout io.Writer) (*loomcrypto.Keyring, error) {
	if cfg.MasterKey != "" {
		k, err := loomcrypto.ParseKeyring(cfg.MasterKey)
		if err != nil {
			return nil, fmt.Errorf("LOOM_MASTER_KEY: %w", err)
		}
		return k, nil
	}
	if cfg.DatabaseURL != "" {
		return nil, errors.New("LOOM_MASTER_KEY is required with DATABASE_URL: trace bodies and provider keys are encrypted with it " +
			"(make one with: head -c 32 /dev/urandom | base64)")
	}
	path := filepath.Join(cfg.DataDir, "master.key")
	b, err := readSecretFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := loomcrypto.GenerateMasterKey()
		if err != nil {
			return nil, err
		}
		if err := writeFileSync(path, []byte(key+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("master key file: %w", err)
		}
		fmt.Fprintf(stdout, "loom: no LOOM_MASTER_KEY set: created a master key in %s (mode 0600); back it up, traces cannot be decrypted without it\n", path)
		b = []byte(key)
	} else if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	k, err := loomcrypto.ParseKeyring(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return k, nil
}

// readSecretFile reads a file only this user may read: a key file that others can read
// is refused, not used.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible to other users (mode %04o); make it private with: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	return io.ReadAll(f)
}

// writeFileSync writes a new file atomically: a crash leaves either no file or the whole
// one, never a torn key. The data goes to a temporary file in the same directory, is
// synced, renamed into place without replacing an existing file, and the directory is
// synced so the name survives a power loss.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once linked into place
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// A hard link fails if path exists, where a rename would replace it: a key written
	// by another process at the same moment is never overwritten.
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// upstreamRoutes builds the routes the environment configures.
func upstreamRoutes(cfg config) []loom.Route {
	var routes []loom.Route
	var client *http.Client // nil: each adapter's default, provider.Transport
	if cfg.Proxied {
		client = &http.Client{Transport: provider.NewTransport()}
	}
	if cfg.OpenAIKey != "" || cfg.OpenAIBaseURL != "" {
		routes = append(routes, loom.Route{Name: "openai",
			Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIKey, Client: client}),
			Models:   cfg.OpenAIModels})
	}
	if cfg.AzureEndpoint != "" {
		routes = append(routes, loom.Route{Name: "azure",
			Provider: provider.NewAzure(provider.AzureConfig{Endpoint: cfg.AzureEndpoint, APIKey: cfg.AzureKey, APIVersion: cfg.AzureVersion, Client: client}),
			Models:   cfg.AzureDeployments})
	}
	if cfg.AnthropicKey != "" {
		routes = append(routes, loom.Route{Name: "anthropic",
			Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: cfg.AnthropicBaseURL, APIKey: cfg.AnthropicKey, Client: client}),
			Models:   cfg.AnthropicModels})
	}
	return routes
}

// bootstrap creates the "default" tenant and its first key when the store has no tenant,
// and returns the raw key. A given key (LOOM_BOOTSTRAP_KEY) is stored instead of a new
// one.
func bootstrap(ctx context.Context, admin *tenancy.Service, given string) (string, error) {
	tenants, err := admin.ListTenants(ctx)
	if err != nil || len(tenants) > 0 {
		return "", err
	}
	t, err := admin.CreateTenant(ctx, "default")
	if err != nil {
		return "", err
	}
	if given == "" {
		raw, _, err := admin.CreateKey(ctx, t.ID, "bootstrap")
		return raw, err
	}
	if !strings.HasPrefix(given, tenancy.KeyPrefix) || len(given) < 20 {
		return "", fmt.Errorf("LOOM_BOOTSTRAP_KEY must start with %q and be at least 20 characters", tenancy.KeyPrefix)
	}
	_, err = admin.ImportKey(ctx, t.ID, "bootstrap", given)
	return given, err
}
