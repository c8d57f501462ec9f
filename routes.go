package loom

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// router picks the provider for a model: the tenant's own routes first, then the
// gateway's.
type router struct {
	global []Route
	store  tenancy.Store
	ttl    time.Duration
	now    func() time.Time
	// staleFor is how long past ttl cached routes still serve while the store fails
	// (negative: never); servedStale counts the times they did.
	staleFor    time.Duration
	servedStale atomic.Int64

	mu sync.Mutex
	// tenants caches each tenant's routes built from its provider configurations.
	tenants *simplelru.LRU[string, tenantRoutes]
	// snapshot holds every tenant's provider configurations as read at snapshotAt (nil
	// without Config.KeySetRefresh): the fallback, in an outage, for tenants not cached.
	// gen counts forgets, so routes or a snapshot read before one are not cached after
	// it: a lookup racing SetTenantProvider cannot bring the old configuration (and key)
	// back.
	snapshot   map[string][]tenancy.ProviderConfig
	snapshotAt time.Time
	gen        uint64
	// openKey unseals a tenant provider's API key; nil when the gateway has no keyring.
	openKey func(tenantID, name string, version int, sealed []byte) ([]byte, error)
	client  *http.Client // upstream client for tenant-configured providers
}

type tenantRoutes struct {
	routes  []Route
	expires time.Time
	stale   time.Time // read + ttl + staleFor: until then they serve when the store fails
	// degraded marks routes served because the store failed; each use counts.
	degraded bool
}

func newRouter(global []Route, store tenancy.Store, size int, ttl, staleFor time.Duration, now func() time.Time, openKey func(string, string, int, []byte) ([]byte, error)) *router {
	cache, _ := simplelru.NewLRU[string, tenantRoutes](size, nil) // size ≥ 1, set by New
	return &router{
		global:   global,
		tenants:  cache,
		store:    store,
		ttl:      ttl,
		staleFor: staleFor,
		now:      now,
		openKey:  openKey,
		client:   &http.Client{Transport: &provider.Transport{}},
	}
}

// resolve returns the route serving model for the tenant and the upstream model name.
func (rt *router) resolve(ctx context.Context, tenantID, model string) (*Route, string, error) {
	own, err := rt.tenantRoutes(ctx, tenantID)
	if err != nil {
		return nil, "", err
	}
	if name, rest, ok := strings.Cut(model, "/"); ok && rest != "" {
		for _, routes := range [2][]Route{own, rt.global} {
			for i := range routes {
				r := &routes[i]
				if r.Name == name && (len(r.Models) == 0 || slices.Contains(r.Models, rest)) {
					return r, rest, nil
				}
			}
		}
	}
	for _, routes := range [2][]Route{own, rt.global} {
		for i := range routes {
			if slices.Contains(routes[i].Models, model) {
				return &routes[i], model, nil
			}
		}
	}
	return nil, "", &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
		Message: "The model `" + model + "` does not exist or you do not have access to it."}
}

// models lists the model ids a tenant can ask for, each once: "route/model" for each
// model a route lists, the tenant's own routes first. A bare name ("gpt-4o-mini") also
// routes to the first route listing it, but is not listed again: a client picking from
// the list sees each model once, under the id that names its route. A route without a
// model list passes any "route/…" model and lists none.
func (rt *router) models(ctx context.Context, tenantID string) ([]modelEntry, error) {
	own, err := rt.tenantRoutes(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	var out []modelEntry
	seen := map[string]bool{}
	for _, routes := range [2][]Route{own, rt.global} {
		for _, r := range routes {
			for _, m := range r.Models {
				if id := r.Name + "/" + m; !seen[id] {
					seen[id] = true
					out = append(out, modelEntry{ID: id, Object: "model", OwnedBy: r.Name})
				}
			}
		}
	}
	return out, nil
}

// retrieveModel serves GET /v1/models/{id}: a model the tenant can ask for by that id,
// listed or bare, as long as its route lists it (a route without a model list cannot say
// which models exist upstream).
func (g *Gateway) retrieveModel(w http.ResponseWriter, r *http.Request) {
	p, err := g.authenticate(r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	id := r.PathValue("id")
	route, model, err := g.routes.resolve(r.Context(), p.TenantID, id)
	if err == nil && !slices.Contains(route.Models, model) {
		err = &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: "The model `" + id + "` does not exist or you do not have access to it."}
	}
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	body, _ := json.Marshal(modelEntry{ID: id, Object: "model", OwnedBy: route.Name})
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// tenantRoutes returns the routes built from the tenant's provider configurations.
func (rt *router) tenantRoutes(ctx context.Context, tenantID string) ([]Route, error) {
	now := rt.now()
	rt.mu.Lock()
	c, cached := rt.tenants.Get(tenantID)
	gen := rt.gen
	rt.mu.Unlock()
	if cached && now.Before(c.expires) {
		if c.degraded {
			rt.servedStale.Add(1)
		}
		return c.routes, nil
	}
	cfgs, err := rt.store.ListProviderConfigs(ctx, tenantID)
	if err != nil {
		if routes, ok := rt.fallback(ctx, tenantID, c, cached, gen); ok {
			return routes, nil
		}
		return nil, fmt.Errorf("loom: tenant providers: %w", err)
	}
	return rt.cache(tenantID, cfgs, tenantRoutes{expires: now.Add(rt.ttl), stale: now.Add(rt.ttl + rt.staleFor)}, gen)
}

// fallback is the tenant's routes when the store failed: the cached ones, or the
// snapshot's, if read within ttl + staleFor. They are cached for min(ttl, 5s), so the
// store is retried at that pace rather than on every request.
func (rt *router) fallback(ctx context.Context, tenantID string, c tenantRoutes, cached bool, gen uint64) ([]Route, bool) {
	if rt.staleFor < 0 || ctx.Err() != nil {
		return nil, false
	}
	now := rt.now()
	retry := now.Add(min(rt.ttl, 5*time.Second))
	if cached && now.Before(c.stale) {
		c.expires, c.degraded = retry, true
		rt.mu.Lock()
		if rt.gen == gen {
			rt.tenants.Add(tenantID, c)
		}
		rt.mu.Unlock()
		rt.servedStale.Add(1)
		return c.routes, true
	}
	rt.mu.Lock()
	cfgs, at := rt.snapshot[tenantID], rt.snapshotAt
	have := rt.snapshot != nil
	rt.mu.Unlock()
	stale := at.Add(rt.ttl + rt.staleFor)
	if !have || !now.Before(stale) {
		return nil, false
	}
	// A tenant absent from the snapshot had no configurations when it was read.
	routes, err := rt.cache(tenantID, cfgs, tenantRoutes{expires: retry, stale: stale, degraded: true}, gen)
	if err != nil {
		return nil, false
	}
	rt.servedStale.Add(1)
	return routes, true
}

// cache builds the routes of the tenant's configurations and caches them in e, unless a
// forget came after gen was read.
func (rt *router) cache(tenantID string, cfgs []tenancy.ProviderConfig, e tenantRoutes, gen uint64) ([]Route, error) {
	routes := make([]Route, 0, len(cfgs))
	for _, c := range cfgs {
		p, err := rt.build(c)
		if err != nil {
			return nil, fmt.Errorf("loom: tenant %s provider %q: %w", tenantID, c.Name, err)
		}
		routes = append(routes, Route{Name: c.Name, Provider: p, Models: c.Models})
	}
	rt.mu.Lock()
	if rt.gen == gen {
		e.routes = routes
		rt.tenants.Add(tenantID, e)
	}
	rt.mu.Unlock()
	return routes, nil
}

// refresh reads every tenant's configurations as the snapshot for an outage.
func (rt *router) refresh(ctx context.Context, store tenancy.Snapshotter) error {
	rt.mu.Lock()
	gen := rt.gen
	rt.mu.Unlock()
	read := rt.now()
	cfgs, err := store.ListAllProviderConfigs(ctx)
	if err != nil {
		return fmt.Errorf("loom: refresh tenant providers: %w", err)
	}
	snap := map[string][]tenancy.ProviderConfig{}
	for _, c := range cfgs {
		snap[c.TenantID] = append(snap[c.TenantID], c)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.gen == gen {
		rt.snapshot, rt.snapshotAt = snap, read
	}
	return nil
}

// forget drops a tenant's cached routes, after its configuration changed, and the
// snapshot, which no longer says what the tenant has (the next refresh reads a new one).
func (rt *router) forget(tenantID string) {
	rt.mu.Lock()
	rt.tenants.Remove(tenantID)
	rt.gen++
	rt.snapshot = nil
	rt.mu.Unlock()
}

// build makes a tenant's provider. It is the tenant's own upstream account, so the
// tenant's clients may steer it with the headers its API knows.
func (rt *router) build(c tenancy.ProviderConfig) (provider.Provider, error) {
	var key string
	if len(c.SealedAPIKey) > 0 {
		if rt.openKey == nil {
			return nil, fmt.Errorf("a sealed API key needs Config.Keyring")
		}
		k, err := rt.openKey(c.TenantID, c.Name, c.KeyVersion, c.SealedAPIKey)
		if err != nil {
			return nil, err
		}
		key = string(k)
	}
	switch c.Kind {
	case "openai":
		return provider.NewOpenAI(provider.OpenAIConfig{BaseURL: c.BaseURL, APIKey: key, ClientHeaders: provider.OpenAIHeaders, Client: rt.client}), nil
	case "azure":
		return provider.NewAzure(provider.AzureConfig{Endpoint: c.BaseURL, APIKey: key, APIVersion: c.APIVersion, ClientHeaders: provider.OpenAIHeaders, Client: rt.client}), nil
	case "anthropic":
		return provider.NewAnthropic(provider.AnthropicConfig{BaseURL: c.BaseURL, APIKey: key, ClientHeaders: []string{"Anthropic-Beta"}, Client: rt.client}), nil
	case "mock":
		return provider.NewMock(provider.MockConfig{}), nil
	}
	return nil, fmt.Errorf("unknown provider kind %q", c.Kind)
}
