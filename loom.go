package loom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
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

	// Tracing configures the trace pipeline. If Tracing.Sinks is empty, no traces are
	// recorded. If Tracing.Sealer is nil, Keyring seals the bodies; if Tracing.Enrich is
	// nil, the gateway prices each trace with Prices.
	Tracing tracing.PipelineConfig
	// Keyring seals trace bodies and opens the sealed upstream API keys of tenant
	// provider configurations. If nil, tenant provider configurations with an API key
	// are refused, and New refuses a trace pipeline without a Sealer unless
	// TraceWithoutBodies says that is meant.
	Keyring *loomcrypto.Keyring
	// TraceWithoutBodies records traces without request and response bodies (tokens,
	// cost, latency and status only) when there is no Keyring or Tracing.Sealer to seal
	// them. It exists so that running without bodies is a choice written down, never the
	// accident of a master key that failed to load.
	TraceWithoutBodies bool
	// Prices prices each trace. If nil, the embedded price table is used.
	Prices *pricing.Table
	// Analytics reads the traces the sinks write (analytics.NewPostgresStore or
	// analytics.NewSQLiteStore over the same database) and serves the tenant-scoped
	// analytics API: GET /v1/traces, /v1/traces/{id} (bodies decrypted with Keyring),
	// /v1/traces/export, /v1/analytics/summary, /v1/analytics/timeseries and
	// /v1/analytics/values, behind the same API-key authentication as the data plane.
	// If nil, those endpoints are off (404).
	Analytics analytics.Store

	// MaxBodyBytes bounds a request body; larger bodies get 413. If zero, 8 MiB.
	MaxBodyBytes int64
	// UpstreamTimeout bounds a whole upstream call, first byte to last; when it passes,
	// the client gets 504 (or, mid-stream, an error event). If zero, 10 minutes.
	UpstreamTimeout time.Duration
	// MaxCaptureBytes bounds how much of each response body a trace keeps. If zero, 1 MiB.
	MaxCaptureBytes int

	// AuthCacheSize and AuthCacheTTL size the cache of authenticated keys and tenant
	// provider configurations. The TTL bounds how long a revocation made on another
	// replica takes to reach this one. If zero, 10,000 entries and 30 seconds.
	AuthCacheSize int
	AuthCacheTTL  time.Duration

	// KeyUsageInterval is how often the API keys' last-used times are written to the
	// Store, when it can (a TouchKeys method, as both built-in stores have), batched off
	// the request path; they are written at Shutdown too. If zero, 30 seconds; if
	// negative, never.
	KeyUsageInterval time.Duration

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
// and, with Config.Analytics, the analytics API (analytics.Paths).
//
// Everything New starts, Shutdown stops.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	auth   *tenancy.Authenticator
	admin  *tenancy.Service
	routes *router
	traces *tracing.Pipeline // nil when tracing is off
	mux    *http.ServeMux

	// mu guards closed against requests starting while Shutdown waits for inflight.
	mu           sync.RWMutex
	closed       bool
	inflight     sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error

	// touch writes keys' last-used times (nil when the store cannot); the loop writing
	// them periodically stops when stopUsage closes and closes usageDone.
	touch     func(ctx context.Context, at time.Time, keyIDs ...string) error
	stopUsage chan struct{}
	usageDone chan struct{}
}

// keyToucher is a Store that records when keys were last used.
type keyToucher interface {
	TouchKeys(ctx context.Context, at time.Time, keyIDs ...string) error
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
	auth := tenancy.NewAuthenticator(cfg.Store, tenancy.AuthOptions{Size: cfg.AuthCacheSize, TTL: cfg.AuthCacheTTL, Now: cfg.Now})
	g := &Gateway{
		cfg:   cfg,
		log:   log,
		auth:  auth,
		admin: tenancy.NewService(cfg.Store, auth),
	}
	var openKey func(tenantID, name string, version int, sealed []byte) ([]byte, error)
	if cfg.Keyring != nil {
		openKey = func(tenantID, name string, version int, sealed []byte) ([]byte, error) {
			return cfg.Keyring.Open(tenantID, ProviderKeyRecordID(name), version, sealed)
		}
	}
	g.routes = newRouter(cfg.Routes, cfg.Store, cfg.AuthCacheSize, cfg.AuthCacheTTL, cfg.Now, openKey)
	if len(cfg.Tracing.Sinks) > 0 && cfg.Keyring == nil && cfg.Tracing.Sealer == nil && !cfg.TraceWithoutBodies {
		return nil, errors.New("loom: traces need Config.Keyring (or Tracing.Sealer) to seal their bodies; " +
			"set Config.TraceWithoutBodies to record traces without bodies")
	}
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
			tc.Enrich = priceTrace(cfg.Prices)
		}
		p, err := tracing.NewPipeline(tc)
		if err != nil {
			return nil, fmt.Errorf("loom: %w", err)
		}
		g.traces = p
	}
	if kt, ok := cfg.Store.(keyToucher); ok && cfg.KeyUsageInterval > 0 {
		g.touch = kt.TouchKeys
		g.stopUsage, g.usageDone = make(chan struct{}), make(chan struct{})
		go g.flushUsageLoop(cfg.KeyUsageInterval)
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

// Admin returns the tenancy service bound to this gateway's auth cache: revoking a key or
// deactivating a tenant through it takes effect on this gateway at once. Set tenant
// provider configurations with SetTenantProvider, which also seals the upstream key and
// refreshes this gateway's routes.
func (g *Gateway) Admin() *tenancy.Service { return g.admin }

// SetTenantProvider stores a tenant's own configuration of an upstream provider, sealing
// apiKey (if any) with the Keyring; it takes effect for the tenant at once on this gateway
// and within AuthCacheTTL on others. The configuration's Name is the model prefix it
// serves, overriding the gateway route of the same name for this tenant.
func (g *Gateway) SetTenantProvider(ctx context.Context, c tenancy.ProviderConfig, apiKey string) error {
	c.SealedAPIKey, c.KeyVersion = nil, 0
	if apiKey != "" {
		if g.cfg.Keyring == nil {
			return errors.New("loom: a tenant provider API key needs Config.Keyring")
		}
		sealed, v, err := g.cfg.Keyring.Seal(c.TenantID, ProviderKeyRecordID(c.Name), []byte(apiKey))
		if err != nil {
			return fmt.Errorf("loom: seal provider key: %w", err)
		}
		c.SealedAPIKey, c.KeyVersion = sealed, v
	}
	if err := g.admin.PutProviderConfig(ctx, c); err != nil {
		return err
	}
	g.routes.forget(c.TenantID)
	return nil
}

// Shutdown waits for in-flight requests to finish (or ctx to end), then flushes every
// trace to the sinks and stops the gateway's goroutines. It does not close the Store.
// Calling it again returns the first call's result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		done := make(chan struct{})
		go func() { g.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			g.shutdownErr = fmt.Errorf("loom: shutdown: requests still in flight: %w", ctx.Err())
		}
		if g.touch != nil {
			close(g.stopUsage)
			<-g.usageDone
			if err := g.auth.FlushUsage(ctx, g.touch); err != nil {
				g.shutdownErr = errors.Join(g.shutdownErr, fmt.Errorf("loom: shutdown: %w", err))
			}
		}
		if g.traces != nil {
			if err := g.traces.Shutdown(ctx); err != nil {
				g.shutdownErr = errors.Join(g.shutdownErr, fmt.Errorf("loom: shutdown: %w", err))
			}
		}
	})
	return g.shutdownErr
}

// flushUsageLoop writes keys' last-used times every interval until Shutdown.
func (g *Gateway) flushUsageLoop(interval time.Duration) {
	defer close(g.usageDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-g.stopUsage:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), interval)
			if err := g.auth.FlushUsage(ctx, g.touch); err != nil {
				g.log.Warn("key usage not recorded; retrying at the next interval", "err", err)
			}
			cancel()
		}
	}
}

// ForceFlush writes every trace recorded so far to the sinks.
func (g *Gateway) ForceFlush(ctx context.Context) error {
	if g.traces == nil {
		return nil
	}
	return g.traces.ForceFlush(ctx)
}

// ProviderKeyRecordID is the record id a tenant provider's upstream API key is sealed
// under (with the tenant id): Keyring.Seal(tenantID, ProviderKeyRecordID(name), key).
func ProviderKeyRecordID(name string) string { return "provider:" + name }

// priceTrace returns the hook that prices a trace off the request path: by the model the
// upstream says served it, else by the model asked for. A trace without usage, or whose
// model has no price, gets no cost (nil), never a guess.
func priceTrace(prices *pricing.Table) func(*tracing.Trace) {
	return func(t *tracing.Trace) {
		t.PriceVersion = prices.Version()
		if t.UsageSource == tracing.UsageMissing || t.UsageSource == "" {
			return
		}
		u := pricing.Usage{PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens, CachedTokens: t.CachedTokens}
		for _, m := range [2]string{t.ServedModel, t.Model} {
			if m == "" {
				continue
			}
			if c, ok := prices.Cost(m, u); ok {
				t.CostMicroUSD = &c
				return
			}
		}
	}
}

// TraceStats reports the trace pipeline's counters: traces recorded, written, pending and
// lost (by reason). It is the zero value when tracing is off.
func (g *Gateway) TraceStats() tracing.Stats {
	if g.traces == nil {
		return tracing.Stats{}
	}
	return g.traces.Stats()
}
