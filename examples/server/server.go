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
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/propagation"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// Server is a running standalone gateway.
type Server struct {
	Gateway *loom.Gateway
	// Addr is the address the server listens on (with the real port when :0 was asked).
	Addr string
	// BootstrapKey is the key made on first start ("" when the store had keys).
	BootstrapKey string

	log       *slog.Logger
	access    *accessLog
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
	// adminStore keeps admin users, sessions and the admin audit log (adminboot.go).
	adminStore admin.Store
	// fold folds the sink's rollup deltas (fold.go).
	fold rollup.Folder
}

// Start locks the data directory, listens, opens the stores, builds the gateway and starts
// serving. It writes in that order, so a start that fails on its address (a busy port)
// leaves nothing behind but the lock file, and one that fails later resumes on the next
// start: the bootstrap key is made only once the server can serve it.
func Start(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger) (_ *Server, err error) {
	s := &Server{serving: make(chan error, 1), log: log}
	var ln net.Listener
	defer func() {
		if err != nil {
			if s.Gateway != nil {
				s.Gateway.Shutdown(ctx)
			}
			if ln != nil {
				ln.Close()
			}
			s.closeAll()
		}
	}()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("-data (LOOM_DATA_DIR): %w", err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, lock.Close)
	if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("-addr (LOOM_ADDR) %s: %w", cfg.Addr, err)
	}
	if cfg.PprofAddr != "" {
		if err := s.servePprof(cfg.PprofAddr); err != nil {
			return nil, err
		}
	}

	keyring, err := openKeyring(cfg, log)
	if err != nil {
		return nil, err
	}
	var (
		store tenancy.Store
		sink  tracing.Sink
		reads analytics.Store
	)
	storeKind, storeAt := "SQLite", filepath.Join(cfg.DataDir, "loom.db")
	if cfg.DatabaseURL != "" {
		storeKind, storeAt = "PostgreSQL", describeDatabase(cfg.DatabaseURL)
		store, sink, reads, err = s.openPostgres(ctx, cfg.DatabaseURL)
	} else {
		store, sink, reads, err = s.openSQLite(ctx, storeAt)
	}
	if err != nil {
		return nil, err
	}
	if dk, ok := store.(loomcrypto.DataKeyStore); ok {
		keyring = keyring.WithDataKeys(dk) // per-tenant data keys, in tenant_data_keys
	}
	log.Info("store: "+storeKind, "at", storeAt)
	log.Info("data directory", "path", cfg.DataDir)
	if err := s.startLedger(cfg, log); err != nil {
		return nil, err
	}
	reg := metricsRegistry()
	if err := s.startFolder(s.fold, reg, log); err != nil {
		return nil, err
	}

	prices := cfg.Prices.WithAliases(cfg.AzureDeploymentModels)
	routes, upstreams := upstreamRoutes(cfg)
	logUnpriced(log, routes, prices) // the built-in mock below has no price to miss
	if len(routes) == 0 {
		routes = []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{ChunkDelay: 20 * time.Millisecond}), Models: []string{"mock-1"}}}
		upstreams = map[string]string{"mock": "built-in mock"}
		log.Warn(`no upstream configured (OPENAI_API_KEY, OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT, ANTHROPIC_API_KEY): serving the built-in mock provider as model "mock-1"`)
	}
	for _, r := range routes {
		models := strings.Join(r.Models, ",")
		if models == "" {
			models = "any " + r.Name + "/…"
		}
		log.Info("route", "name", r.Name, "upstream", upstreams[r.Name], "models", models)
	}
	s.access = &accessLog{upstreams: upstreams, warn: log}
	if cfg.AccessLog {
		s.access.log = log
	}
	gcfg := loom.Config{Store: store, Routes: routes, Keyring: keyring, Prices: prices, Logger: log, OnRequest: s.access.note,
		Analytics: reads, KeySetRefresh: cfg.KeySetRefresh, Metrics: reg}
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
			log.Info("tracing: exporting spans over OTLP", "protocol", cfg.OTLPProtocol)
		}
		bodies := "sealed with the master key"
		if keyring.Enveloped() {
			bodies = "sealed with per-tenant data keys wrapped by the master key"
		}
		log.Info("tracing: on", "strict", cfg.StrictTraces, "bodies", bodies, "spool", gcfg.Tracing.SpoolDir)
	} else {
		log.Warn("tracing: off (LOOM_TRACING): no traces are recorded")
	}
	if gcfg.Admin, err = s.adminConfig(reads, log); err != nil {
		return nil, err
	}
	gw, err := loom.New(gcfg)
	if err != nil {
		return nil, err
	}
	s.Gateway = gw

	if s.BootstrapKey, err = bootstrap(ctx, gw.Admin(), cfg.BootstrapKey, stdout, log); err != nil {
		return nil, fmt.Errorf("bootstrap tenant: %w", err)
	}
	if err := bootstrapAdmin(ctx, gcfg.Admin.Users, cfg, stdout, log); err != nil {
		return nil, fmt.Errorf("bootstrap admin user: %w", err)
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
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		mux.HandleFunc(path, methodNotAllowed)
	}
	mux.Handle("/v1/", gw)
	mux.Handle("/admin/", gw)
	mux.Handle("/", analytics.Dashboard())

	s.Addr = ln.Addr().String()
	s.http = &http.Server{Handler: s.access.wrap(mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { s.serving <- s.http.Serve(ln) }()
	s.ready.Store(true)
	log.Info("access log", "on", cfg.AccessLog)
	if reads != nil {
		log.Info("analytics API on http://" + displayAddr(s.Addr) + "/v1/traces and /v1/analytics/… (same API keys)")
	}
	log.Info("listening on http://"+s.Addr+" (dashboard http://"+displayAddr(s.Addr)+"/, admin pages http://"+displayAddr(s.Addr)+"/admin.html, OpenAI base URL http://"+displayAddr(s.Addr)+"/v1)", "version", versionString())
	return s, nil
}

// methodNotAllowed answers a wrong method on the server's own GET endpoints.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, r.Method+" is not allowed on "+r.URL.Path+"; use GET", http.StatusMethodNotAllowed)
}

// describeDatabase names a PostgreSQL connection string (URL or keyword/value) without its
// password: user, host, port and database.
func describeDatabase(dsn string) string {
	c, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "(unparsable DATABASE_URL)"
	}
	cc := c.ConnConfig
	return fmt.Sprintf("postgres://%s@%s/%s", cc.User, net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))), cc.Database)
}

// redactURL is u without its password, for the start-up summary.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable)"
	}
	return p.Redacted()
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
func (s *Server) servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("LOOM_PPROF_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	s.closers = append(s.closers, srv.Close)
	s.log.Info("profiles on http://" + ln.Addr().String() + "/debug/pprof/")
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
	s.adminStore = admin.NewSQLiteStore(db)
	s.fold = rollup.SQLiteFolder(db)
	return sqliteTenancy(db), tracing.NewSQLiteSink(db, ledger.AppendSQLite, rollup.SQLite), analytics.NewSQLiteStore(db), nil
}

func (s *Server) openPostgres(ctx context.Context, url string) (tenancy.Store, tracing.Sink, analytics.Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	s.closers = append(s.closers, func() error { pool.Close(); return nil })
	if err := pool.Ping(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("DATABASE_URL: cannot connect to %s: %w", describeDatabase(url), err)
	}
	db := stdlib.OpenDBFromPool(pool)
	s.closers = append(s.closers, db.Close)
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		return nil, nil, nil, err
	}
	sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{ledger.AppendPostgres, rollup.Postgres}})
	if err != nil {
		return nil, nil, nil, err
	}
	s.ping = pool.Ping
	s.db, s.dialect = db, ledger.Postgres
	s.adminStore = admin.NewPostgresStore(pool)
	s.fold = rollup.PostgresFolder(pool)
	return postgresTenancy(pool), sink, analytics.NewPostgresStore(pool), nil
}

// openKeyring reads LOOM_MASTER_KEY. Without it, the embedded default keeps a generated
// key in the data directory; with PostgreSQL (a production deployment) a missing key is
// an error, since bodies sealed with a key file on one machine could not be read by
// another replica.
func openKeyring(cfg config, log *slog.Logger) (*loomcrypto.Keyring, error) {
	if cfg.MasterKey != nil {
		return cfg.MasterKey, nil
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
		log.Warn("no LOOM_MASTER_KEY set: created a master key file (mode 0600); back it up, traces cannot be decrypted without it", "path", path)
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

// upstreamRoutes builds the routes the environment configures, and names each one's
// upstream (its base URL) for the start-up summary and upstream-failure logs.
func upstreamRoutes(cfg config) ([]loom.Route, map[string]string) {
	var routes []loom.Route
	upstreams := map[string]string{}
	var client *http.Client // nil: each adapter's default, provider.Transport
	if cfg.Proxied {
		client = &http.Client{Transport: provider.NewTransport()}
	}
	if cfg.OpenAIKey != "" || cfg.OpenAIBaseURL != "" {
		routes = append(routes, loom.Route{Name: "openai",
			Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIKey, Client: client}),
			Models:   cfg.OpenAIModels})
		upstreams["openai"] = or(cfg.OpenAIBaseURL, "https://api.openai.com/v1")
	}
	if cfg.AzureEndpoint != "" {
		routes = append(routes, loom.Route{Name: "azure",
			Provider: provider.NewAzure(provider.AzureConfig{Endpoint: cfg.AzureEndpoint, APIKey: cfg.AzureKey, APIVersion: cfg.AzureVersion, Client: client}),
			Models:   cfg.AzureModels})
		upstreams["azure"] = cfg.AzureEndpoint
	}
	if cfg.AnthropicKey != "" {
		routes = append(routes, loom.Route{Name: "anthropic",
			Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: cfg.AnthropicBaseURL, APIKey: cfg.AnthropicKey, Client: client}),
			Models:   cfg.AnthropicModels})
		upstreams["anthropic"] = or(cfg.AnthropicBaseURL, "https://api.anthropic.com")
	}
	for name, u := range upstreams {
		upstreams[name] = redactURL(u)
	}
	return routes, upstreams
}

// bootstrap makes the first API key when the store has none: in the tenant "default"
// (made if missing, so a start that failed between the two resumes), with the given key
// (LOOM_BOOTSTRAP_KEY) or a generated one, printed once on stdout (and only there). A
// given key is not echoed. When the store has keys, a given key is ignored, and said so.
func bootstrap(ctx context.Context, admin *tenancy.Service, given string, stdout io.Writer, log *slog.Logger) (string, error) {
	tenants, err := admin.ListTenants(ctx)
	if err != nil {
		return "", err
	}
	var home *tenancy.Tenant
	for i, t := range tenants {
		keys, err := admin.ListKeys(ctx, t.ID)
		if err != nil {
			return "", err
		}
		if len(keys) > 0 {
			if given != "" {
				log.Warn("LOOM_BOOTSTRAP_KEY ignored: the store already has API keys (it only makes the first one); manage keys through the admin API", "tenants", len(tenants))
			}
			return "", nil
		}
		if t.Name == "default" && home == nil {
			home = &tenants[i]
		}
	}
	if home == nil {
		t, err := admin.CreateTenant(ctx, "default")
		if err != nil {
			return "", err
		}
		home = &t
	}
	if given != "" {
		if _, err := admin.ImportKey(ctx, home.ID, "bootstrap", given); err != nil {
			return "", err
		}
		log.Info("created the first API key from LOOM_BOOTSTRAP_KEY", "tenant", home.Name, "tenant_id", home.ID, "key_prefix", given[:len(tenancy.KeyPrefix)+4]+"…")
		return given, nil
	}
	raw, _, err := admin.CreateKey(ctx, home.ID, "bootstrap")
	if err != nil {
		return "", err
	}
	log.Info("created the first API key, printed once on stdout", "tenant", home.Name, "tenant_id", home.ID)
	fmt.Fprintf(stdout, "Loom API key for tenant %q (shown once, keep it):\n\n    %s\n\n", home.Name, raw)
	return raw, nil
}
