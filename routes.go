package loom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/loom-gateway/loom/internal/ttlcache"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// router picks the provider for a model: the tenant's own routes first, then the
// gateway's.
type router struct {
	global []Route
	store  tenancy.Store
	// tenants caches each tenant's routes built from its provider configurations, with
	// the Authenticator's discipline (TTL, stale in an outage, generations); servedStale
	// counts the times routes served stale.
	tenants     *ttlcache.Cache[string, []Route]
	servedStale atomic.Int64
	// snapshot holds every tenant's provider configurations as read at snapshotAt (nil
	// without Config.KeySetRefresh): the fallback, in an outage, for tenants not cached.
	// Guarded by tenants' lock, and dropped by every invalidation of it, so a snapshot
	// read before a change cannot bring the old configuration (and key) back.
	snapshot   map[string][]tenancy.ProviderConfig
	snapshotAt time.Time
	// keys opens a tenant provider's API key; nil when the gateway has no keyring.
	keys   tenancy.Opener
	kinds  map[string]ProviderKind
	client *http.Client // upstream client for tenant-configured providers
	now    func() time.Time
}

func newRouter(global []Route, store tenancy.Store, cache ttlcache.Options, keys tenancy.Opener, kinds map[string]ProviderKind) *router {
	return &router{
		now:     cache.Now,
		global:  global,
		tenants: ttlcache.New[string, []Route](cache),
		store:   store,
		keys:    keys,
		kinds:   kinds,
		client:  &http.Client{Transport: &provider.Transport{}},
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
	read := rt.now()
	routes, degraded, ok, gen := rt.tenants.Get(tenantID, read)
	if ok {
		if degraded {
			rt.servedStale.Add(1)
		}
		return routes, nil
	}
	cfgs, err := rt.store.ListProviderConfigs(ctx, tenantID)
	if err != nil {
		if routes, ok := rt.fallback(ctx, tenantID, gen); ok {
			rt.servedStale.Add(1)
			return routes, nil
		}
		return nil, fmt.Errorf("loom: tenant providers: %w", err)
	}
	if routes, err = rt.build(tenantID, cfgs); err != nil {
		return nil, err
	}
	rt.tenants.Put(tenantID, routes, read, gen)
	return routes, nil
}

// fallback is the tenant's routes when the store failed: the cached ones, or the
// snapshot's, if read within TTL + StaleFor (see ttlcache).
func (rt *router) fallback(ctx context.Context, tenantID string, gen uint64) ([]Route, bool) {
	if ctx.Err() != nil {
		return nil, false
	}
	if routes, ok := rt.tenants.Stale(tenantID, gen); ok {
		return routes, true
	}
	var (
		cfgs []tenancy.ProviderConfig
		at   time.Time
		have bool
	)
	rt.tenants.Locked(func() { cfgs, at, have = rt.snapshot[tenantID], rt.snapshotAt, rt.snapshot != nil })
	if !have || !rt.tenants.Usable(at) {
		return nil, false
	}
	// A tenant absent from the snapshot had no configurations when it was read.
	routes, err := rt.build(tenantID, cfgs)
	if err != nil {
		return nil, false
	}
	return routes, rt.tenants.PutStale(tenantID, routes, at, gen)
}

// refresh reads every tenant's configurations as the snapshot for an outage.
func (rt *router) refresh(ctx context.Context, store tenancy.Snapshotter) error {
	gen := rt.tenants.Gen()
	read := rt.now()
	cfgs, err := store.ListAllProviderConfigs(ctx)
	if err != nil {
		return fmt.Errorf("loom: refresh tenant providers: %w", err)
	}
	snap := map[string][]tenancy.ProviderConfig{}
	for _, c := range cfgs {
		snap[c.TenantID] = append(snap[c.TenantID], c)
	}
	rt.tenants.IfCurrent(gen, func() { rt.snapshot, rt.snapshotAt = snap, read })
	return nil
}

// forget drops a tenant's cached routes, after its configuration changed, and the
// snapshot, which no longer says what the tenant has (the next refresh reads a new one).
func (rt *router) forget(tenantID string) {
	rt.tenants.Invalidate(func(id string, _ []Route) bool { return id == tenantID }, func() { rt.snapshot = nil })
}

// purge drops every tenant's cached routes and the snapshot.
func (rt *router) purge() {
	rt.tenants.Invalidate(nil, func() { rt.snapshot = nil })
}

// expire makes every tenant's cached routes expired (see ttlcache.Cache.ExpireAll).
func (rt *router) expire() { rt.tenants.ExpireAll() }

// errTenantProvider marks a tenant provider configuration the gateway cannot build (an
// unknown kind, a key that does not open, the kind's own error): a 500, logged with the
// reason, never a reason shown to the client.
var errTenantProvider = errors.New("loom: tenant provider unusable")

// build makes the tenant's routes from its configurations. Each is the tenant's own
// upstream account, so the tenant's clients may steer it with the headers its API knows.
func (rt *router) build(tenantID string, cfgs []tenancy.ProviderConfig) ([]Route, error) {
	routes := make([]Route, 0, len(cfgs))
	for _, c := range cfgs {
		p, err := rt.provider(c)
		if err != nil {
			return nil, fmt.Errorf("%w: tenant %s provider %q: %w", errTenantProvider, tenantID, c.Name, err)
		}
		routes = append(routes, Route{Name: c.Name, Provider: p, Models: c.Models})
	}
	return routes, nil
}

func (rt *router) provider(c tenancy.ProviderConfig) (provider.Provider, error) {
	kind := rt.kinds[c.Kind]
	if kind == nil {
		return nil, fmt.Errorf("unknown provider kind %q", c.Kind)
	}
	if len(c.SealedAPIKey) > 0 && rt.keys == nil {
		return nil, errors.New("a sealed API key needs Config.Keyring")
	}
	key, err := c.OpenAPIKey(rt.keys)
	if err != nil {
		return nil, err
	}
	return kind(c, ProviderEnv{APIKey: key, Client: rt.client})
}
