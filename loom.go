package loom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/ttlcache"
	"github.com/loom-gateway/loom/pricing"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// Route makes a provider reachable by model name.
type Route struct {
	// Name is the model prefix that selects this route: "openai" serves
	// "openai/gpt-4o-mini" with the upstream model "gpt-4o-mini". Required.
	Name string
	// Provider sends the requests. Required.
	Provider provider.Provider
	// Models lists the upstream models this route offers. They are listed by
	// GET /v1/models and may also be asked for without the prefix ("gpt-4o-mini"); the
	// first route listing a bare name serves it. If empty, any "Name/…" model is passed
	// upstream (the upstream decides whether it exists) and no bare name routes here.
	Models []string
}

// Config configures a Gateway. The zero value of every field but Store works.
type Config struct {
	// Store holds tenants, API keys and tenant provider configurations. Required.
	Store tenancy.Store
	// Routes are the providers every tenant can reach. A tenant's own provider
	// configuration of the same name takes precedence for that tenant.
	Routes []Route
	// ProviderKinds adds the provider kinds a tenant's provider configuration may name
	// (its Kind), beside the built-in "openai", "azure", "anthropic" and "mock": an
	// embedder's own provider.Provider, configured per tenant through
	// Admin().PutProviderConfig, which refuses kinds not known here. An entry replaces
	// the built-in of its name; a nil entry removes it. If nil, the built-in kinds.
	ProviderKinds map[string]ProviderKind

	// Tracing configures the trace pipeline. If Tracing.Sinks is empty, no traces are
	// recorded. If Tracing.Sealer is nil, Keyring seals the bodies; if Tracing.Enrich is
	// nil, the gateway prices each trace with Prices, counting first the tokens of an
	// answer that reported no usage (a caller's Enrich takes over both).
	Tracing tracing.PipelineConfig
	// Keyring seals trace bodies and opens the sealed upstream API keys of tenant
	// provider configurations. If nil, tenant provider configurations with an API key
	// are refused, and New refuses a trace pipeline without a Sealer unless
	// TraceWithoutBodies says that is meant. A keyring made with WithDataKeys(Store)
	// (both built-in stores keep data keys) gives each tenant a random data key, which
	// Admin().DeleteTenant destroys; the gateway then calls Keyring.Forget itself.
	Keyring *loomcrypto.Keyring
	// TraceWithoutBodies records traces without request and response bodies (tokens,
	// cost, latency and status only) when there is no Keyring or Tracing.Sealer to seal
	// them. It exists so that running without bodies is a choice written down, never the
	// accident of a master key that failed to load.
	TraceWithoutBodies bool
	// Prices prices each trace. If nil, the embedded price table is used.
	Prices *pricing.Table
	// Analytics reads the traces the sinks write (analytics.NewPostgresStore or
	// analytics.NewSQLiteStore over the same database, whose sink runs the rollup step:
	// rollup.Postgres in PostgresSinkOptions.TxSteps, or tracing.NewSQLiteSink(db,
	// rollup.SQLite), and a rollup.Folder runs beside it; summaries and time series read
	// the rollups) and serves the tenant-scoped
	// analytics API: GET /v1/traces, /v1/traces/{id} (bodies decrypted with Keyring),
	// /v1/traces/export, /v1/analytics/summary, /v1/analytics/timeseries and
	// /v1/analytics/values, behind the same API-key authentication as the data plane.
	// If nil, those endpoints are off (404).
	Analytics analytics.Store
	// Admin, if set, serves the admin API under /admin/ (see AdminConfig). If nil, the
	// admin routes are off (404) and tenants are managed through Gateway.Admin only.
	Admin *AdminConfig

	// MaxBodyBytes bounds a request body; larger bodies get 413. If zero, 8 MiB.
	MaxBodyBytes int64
	// UpstreamTimeout bounds a whole upstream call, first byte to last; when it passes,
	// the client gets 504 (or, mid-stream, an error event). If zero, 10 minutes.
	UpstreamTimeout time.Duration
	// MaxCaptureBytes bounds how much of each response body a trace keeps. If zero, 1 MiB.
	MaxCaptureBytes int

	// AuthCacheSize and AuthCacheTTL size the cache of authenticated keys and tenant
	// provider configurations. If zero, 10,000 entries and 30 seconds. A change made on
	// another replica reaches this one when the Store announces it (a tenancy.Notifier:
	// the PostgreSQL store, within milliseconds) and otherwise, or while the announcing
	// connection is down, within the TTL.
	AuthCacheSize int
	AuthCacheTTL  time.Duration
	// AuthStaleFor is how long past AuthCacheTTL a cached key or tenant provider
	// configuration still answers while the Store cannot be reached, so the data plane
	// rides through a database outage (see tenancy.AuthOptions.StaleFor for the bound on
	// revocations). If zero, 1 hour; if negative, a Store error fails the request.
	AuthStaleFor time.Duration
	// KeySetRefresh, if positive, makes the gateway hold every active key and every tenant
	// provider configuration, read at New and then every KeySetRefresh in the background,
	// so that during a Store outage even keys not used since start are answered (for
	// AuthCacheTTL + AuthStaleFor after the last successful read). The Store must be a
	// tenancy.Snapshotter (both built-in stores are). If zero, only what requests have
	// read is kept.
	KeySetRefresh time.Duration

	// KeyUsageInterval is how often the API keys' last-used times are written to the
	// Store, when it is a tenancy.KeyToucher (both built-in stores are), batched off
	// the request path; they are written at Shutdown too. If zero, 30 seconds; if
	// negative, never.
	KeyUsageInterval time.Duration

	// Metrics receives the gateway's Prometheus collectors (see the README's metrics
	// table). If nil, the gateway makes a registry of its own; either way Gateway.Metrics
	// serves it when it is also a Gatherer. Never the global default registry: two
	// gateways in one process each need their own (or a prometheus.WrapRegistererWith).
	Metrics prometheus.Registerer
	// MetricsTenantLabel adds a "tenant" label (the tenant id) to the request, token and
	// cost metrics. Off by default: every tenant multiplies those series.
	MetricsTenantLabel bool
	// Propagator reads the caller's distributed-trace context (W3C traceparent and
	// tracestate with propagation.TraceContext) from each request and writes the context
	// of Loom's span into the upstream request, so the caller's trace continues through
	// Loom to the provider. The trace ids are kept in the Trace for a sink such as
	// otelsink. If nil, nothing is read or propagated.
	Propagator propagation.TextMapPropagator
	// OnRequest, if set, is called on the request's goroutine when a chat completion has
	// been answered, before its trace is recorded, with what it came to (for an access
	// log or metrics; never a key or a body). It must return quickly. If nil, nothing is
	// called.
	OnRequest func(*http.Request, RequestInfo)

	// Logger receives operational messages. If nil, nothing is logged. Keys and bodies
	// are never logged.
	Logger *slog.Logger
	// Now reads the clock. If nil, time.Now is used.
	Now func() time.Time
}

// Gateway is an OpenAI-compatible LLM gateway: an http.Handler serving
//
//	POST /v1/chat/completions
//	GET  /v1/models
//	GET  /v1/models/{id}
//
// and, with Config.Analytics, the analytics API (analytics.Paths); with Config.Admin, the
// admin API under /admin/ (package admin).
//
// Everything New starts, Shutdown stops.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	auth   *tenancy.Authenticator
	admin  *tenancy.Service
	routes *router
	traces *tracing.Pipeline // nil when tracing is off
	coster *coster           // prices traces; nil when tracing is off or Enrich is the caller's
	mux    *http.ServeMux

	metrics  *metrics
	gatherer prometheus.Gatherer // nil when Config.Metrics cannot be gathered

	// mu guards closed against requests starting while Shutdown waits for inflight.
	mu           sync.RWMutex
	closed       bool
	inflight     sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error

	// touch writes keys' last-used times (nil when the store cannot); snapshot is the
	// store when it is read whole every KeySetRefresh (nil when not). The loops doing
	// that end when Shutdown closes stop.
	touch    func(ctx context.Context, at time.Time, keyIDs ...string) error
	snapshot tenancy.Snapshotter
	notified notifyStats // what the Store's change notifications did
	stop     chan struct{}
	loops    sync.WaitGroup
}

// StoreStats reports how the gateway has fared with its Store, for riding through an
// outage.
type StoreStats struct {
	// AuthServedStale and RoutesServedStale count requests whose key, or whose tenant's
	// provider configurations, were answered past AuthCacheTTL because the Store failed.
	AuthServedStale   int64
	RoutesServedStale int64
	// StaleUntil is when the last answers read from the Store stop serving in an outage:
	// until then the gateway rides through one, at least for the keys read last.
	StaleUntil time.Time
	// KeySetKeys is how many keys the key set holds and KeySetAt when it was read (zero
	// without Config.KeySetRefresh).
	KeySetKeys int
	KeySetAt   time.Time
	// AuthCacheHits counts API keys answered from the auth cache, AuthCacheMisses those
	// looked up in the Store, and AuthStoreErrors the lookups that failed.
	AuthCacheHits, AuthCacheMisses, AuthStoreErrors int64
	// Changes counts the changes the Store announced (a tenancy.Notifier) and the caches
	// applied; ChangeResets the expiries of every cached answer when its notification
	// connection started or came back (the first included); ChangeErrors that
	// connection's failures.
	Changes, ChangeResets, ChangeErrors int64
}

// New returns a Gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if cfg.Store == nil {
		return nil, errors.New("loom: Config.Store is required")
	}
	for _, r := range cfg.Routes {
		if r.Name == "" || r.Provider == nil {
			return nil, fmt.Errorf("loom: route %q needs a Name and a Provider", r.Name)
		}
	}
	if len(cfg.Tracing.Sinks) > 0 && cfg.Keyring == nil && cfg.Tracing.Sealer == nil && !cfg.TraceWithoutBodies {
		return nil, errors.New("loom: traces need Config.Keyring (or Tracing.Sealer) to seal their bodies; " +
			"set Config.TraceWithoutBodies to record traces without bodies")
	}
	if cfg.Admin != nil && cfg.Admin.Users == nil {
		return nil, errors.New("loom: Config.Admin needs Users")
	}
	if _, ok := cfg.Store.(tenancy.Snapshotter); cfg.KeySetRefresh > 0 && !ok {
		return nil, fmt.Errorf("loom: Config.KeySetRefresh needs a Store that is a tenancy.Snapshotter; %T is not", cfg.Store)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 10 * time.Minute
	}
	if cfg.MaxCaptureBytes <= 0 {
		cfg.MaxCaptureBytes = 1 << 20
	}
	if cfg.AuthCacheSize <= 0 {
		cfg.AuthCacheSize = tenancy.DefaultAuthCacheSize
	}
	if cfg.AuthCacheTTL <= 0 {
		cfg.AuthCacheTTL = tenancy.DefaultAuthCacheTTL
	}
	if cfg.KeyUsageInterval == 0 {
		cfg.KeyUsageInterval = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Prices == nil {
		p, err := pricing.Default()
		if err != nil {
			return nil, fmt.Errorf("loom: %w", err)
		}
		cfg.Prices = p
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.AuthStaleFor == 0 {
		cfg.AuthStaleFor = tenancy.DefaultAuthStaleFor
	}
	auth := tenancy.NewAuthenticator(cfg.Store, tenancy.AuthOptions{Size: cfg.AuthCacheSize, TTL: cfg.AuthCacheTTL, StaleFor: cfg.AuthStaleFor, Now: cfg.Now})
	g := &Gateway{cfg: cfg, log: log, auth: auth, stop: make(chan struct{})}
	kinds, kindNames := providerKinds(cfg.ProviderKinds)
	var keys tenancy.Opener
	opts := []tenancy.ServiceOption{tenancy.WithProviderKinds(kindNames...)}
	if cfg.Keyring != nil {
		keys = cfg.Keyring
		opts = append(opts, tenancy.WithSealer(cfg.Keyring), tenancy.WithTenantDeleted(cfg.Keyring.Forget))
	}
	g.routes = newRouter(cfg.Routes, cfg.Store, ttlcache.Options{Size: cfg.AuthCacheSize, TTL: cfg.AuthCacheTTL, StaleFor: cfg.AuthStaleFor, Now: cfg.Now}, keys, kinds)
	g.admin = tenancy.NewService(cfg.Store, auth, append(opts, tenancy.WithProvidersChanged(g.routes.forget))...)
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	g.gatherer, _ = reg.(prometheus.Gatherer)
	m, err := newMetrics(reg, cfg.MetricsTenantLabel, g)
	if err != nil {
		return nil, fmt.Errorf("loom: register metrics: %w", err)
	}
	g.metrics = m
	var reads *analytics.Handler
	if cfg.Analytics != nil {
		var err error
		if reads, err = g.analyticsHandler(); err != nil {
			return nil, err
		}
	}
	if len(cfg.Tracing.Sinks) > 0 {
		tc := cfg.Tracing
		if tc.Logger == nil {
			tc.Logger = log
		}
		if tc.Sealer == nil && cfg.Keyring != nil {
			tc.Sealer = cfg.Keyring
		}
		if tc.Enrich == nil {
			g.coster = newCoster(cfg.Prices)
			tc.Enrich = g.coster.price
		}
		enrich := tc.Enrich
		tc.Enrich = func(t *tracing.Trace) { enrich(t); m.observeCost(t) }
		tc.Sinks = slices.Clone(tc.Sinks)
		for i, s := range tc.Sinks {
			if s != nil { // NewPipeline refuses a nil sink
				tc.Sinks[i] = m.timeSink(sinkName(i, s), s)
			}
		}
		p, err := tracing.NewPipeline(tc)
		if err != nil {
			return nil, fmt.Errorf("loom: %w", err)
		}
		g.traces = p
	}
	if cfg.KeySetRefresh > 0 {
		g.snapshot = cfg.Store.(tenancy.Snapshotter) // checked above
		g.refreshSnapshot()                          // a Store down at start is ridden through once it returns
		g.every(cfg.KeySetRefresh, g.refreshSnapshot)
	}
	if n, ok := cfg.Store.(tenancy.Notifier); ok {
		g.listen(n)
	}
	if kt, ok := cfg.Store.(tenancy.KeyToucher); ok && cfg.KeyUsageInterval > 0 {
		g.touch = kt.TouchKeys
		g.every(cfg.KeyUsageInterval, func() {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.KeyUsageInterval)
			defer cancel()
			if err := g.auth.FlushUsage(ctx, g.touch); err != nil {
				g.log.Warn("key usage not recorded; retrying at the next interval", "err", err)
			}
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", g.chatCompletions)
	mux.HandleFunc("GET /v1/models", g.listModels)
	mux.HandleFunc("GET /v1/models/{id...}", g.retrieveModel)
	for path, allow := range map[string]string{"/v1/chat/completions": "POST", "/v1/models": "GET", "/v1/models/": "GET"} {
		mux.HandleFunc(path, methodNotAllowed(allow))
	}
	if reads != nil {
		mountAnalytics(mux, reads)
	}
	if cfg.Admin != nil {
		if err := g.mountAdmin(mux, cfg.Admin); err != nil {
			return nil, fmt.Errorf("loom: %w", err)
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
			Message: "Unknown request URL: " + r.Method + " " + r.URL.Path + "."})
	})
	g.mux = mux
	return g, nil
}

// methodNotAllowed answers a request whose path is served with another method.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: r.Method + " is not allowed on " + r.URL.Path + "; use " + allow + "."})
	}
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "shutting_down",
			Message: "The gateway is shutting down; retry on another replica."})
		return
	}
	g.inflight.Add(1)
	g.mu.RUnlock()
	defer g.inflight.Done()
	g.mux.ServeHTTP(w, r)
}

// Admin returns the tenancy service bound to this gateway's caches: revoking a key,
// deactivating a tenant or putting a provider configuration (its upstream key sealed with
// the Keyring) through it takes effect on this gateway at once, and on other replicas
// sharing a PostgreSQL Store within moments (see Config.AuthCacheTTL). A provider
// configuration's Name is the model prefix it serves, overriding the gateway route of the
// same name for its tenant.
func (g *Gateway) Admin() *tenancy.Service { return g.admin }

// Shutdown waits for in-flight requests to finish, then flushes every trace to the sinks
// (through the spool, if there is one), writes the keys' last-used times and stops the
// gateway's goroutines. It does not close the Store. Calling it again returns the first
// call's result.
//
// ctx's deadline is split so the traces always get their share: in-flight requests are
// waited for during at most half the time left when Shutdown is called (RequestShare);
// the trace pipeline then has the rest, all of it if the requests finish sooner, and the
// last-used times whatever the pipeline leaves. Requests still running after their share
// are not waited for (Shutdown says so in its error), and their traces are lost
// (Stats.LostClosed).
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		reqCtx, cancel := RequestShare(ctx)
		defer cancel()
		done := make(chan struct{})
		go func() { g.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-reqCtx.Done():
			g.shutdownErr = fmt.Errorf("loom: shutdown: requests still in flight: %w", reqCtx.Err())
		}
		close(g.stop)
		g.loops.Wait()
		if g.traces != nil {
			if err := g.traces.Shutdown(ctx); err != nil {
				g.shutdownErr = errors.Join(g.shutdownErr, fmt.Errorf("loom: shutdown: %w", err))
			}
		}
		if g.touch != nil {
			if err := g.auth.FlushUsage(ctx, g.touch); err != nil {
				g.shutdownErr = errors.Join(g.shutdownErr, fmt.Errorf("loom: shutdown: %w", err))
			}
		}
	})
	return g.shutdownErr
}

// RequestShare returns the part of a shutdown's ctx that waiting for requests may use: a
// context ending at half the time left until ctx's deadline (or with ctx, if it has
// none), so what comes after (flushing traces) keeps the other half. A server that drains
// its connections before calling Shutdown (http.Server.Shutdown) should drain them with
// it too, and hand Shutdown the whole ctx.
func RequestShare(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(d)/2)
}

// every runs job every interval, in a goroutine that ends at Shutdown.
func (g *Gateway) every(interval time.Duration, job func()) {
	g.loops.Add(1)
	go func() {
		defer g.loops.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				job()
			}
		}
	}()
}

// refreshSnapshot reads the key set and every tenant's provider configurations, bounded
// by KeySetRefresh or 30s, whichever is shorter (New waits for the first read); a failure
// keeps the previous ones.
func (g *Gateway) refreshSnapshot() {
	ctx, cancel := context.WithTimeout(context.Background(), min(g.cfg.KeySetRefresh, 30*time.Second))
	defer cancel()
	if err := g.auth.RefreshKeySet(ctx, g.snapshot); err != nil {
		g.log.Warn("key set not refreshed; keeping the previous one", "err", err)
	}
	if err := g.routes.refresh(ctx, g.snapshot); err != nil {
		g.log.Warn("tenant providers not refreshed; keeping the previous ones", "err", err)
	}
}

// StoreStats reports how the gateway has fared with its Store.
func (g *Gateway) StoreStats() StoreStats {
	a := g.auth.Stats()
	return StoreStats{
		AuthServedStale:   a.ServedStale,
		RoutesServedStale: g.routes.servedStale.Load(),
		StaleUntil:        a.StaleUntil,
		KeySetKeys:        a.KeySetKeys,
		KeySetAt:          a.KeySetAt,
		AuthCacheHits:     a.CacheHits,
		AuthCacheMisses:   a.CacheMisses,
		AuthStoreErrors:   a.StoreErrors,
		Changes:           g.notified.changes.Load(),
		ChangeResets:      g.notified.resets.Load(),
		ChangeErrors:      g.notified.errors.Load(),
	}
}

// ForceFlush writes every trace recorded so far to the sinks.
func (g *Gateway) ForceFlush(ctx context.Context) error {
	if g.traces == nil {
		return nil
	}
	return g.traces.ForceFlush(ctx)
}

// TraceStats reports the trace pipeline's counters: traces recorded, written, pending and
// lost (by reason). It is the zero value when tracing is off.
func (g *Gateway) TraceStats() tracing.Stats {
	if g.traces == nil {
		return tracing.Stats{}
	}
	return g.traces.Stats()
}
