package loom

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
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

	mu sync.Mutex
	// tenants caches each tenant's routes built from its provider configurations.
	tenants *simplelru.LRU[string, tenantRoutes]
	// gen counts forgets: routes read before a forget began are not cached, so a lookup
	// racing SetTenantProvider cannot bring the old configuration (and key) back.
	gen uint64
	// openKey unseals a tenant provider's API key; nil when the gateway has no keyring.
	openKey func(tenantID, name string, version int, sealed []byte) ([]byte, error)
	client  *http.Client // upstream client for tenant-configured providers
}

type tenantRoutes struct {
	routes  []Route
	expires time.Time
}

func newRouter(global []Route, store tenancy.Store, size int, ttl time.Duration, now func() time.Time, openKey func(string, string, int, []byte) ([]byte, error)) *router {
	cache, _ := simplelru.NewLRU[string, tenantRoutes](size, nil) // size ≥ 1, set by New
	return &router{
		global:  global,
		tenants: cache,
		store:   store,
		ttl:     ttl,
		now:     now,
		openKey: openKey,
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
	now := rt.now()
	rt.mu.Lock()
	c, ok := rt.tenants.Get(tenantID)
	gen := rt.gen
	rt.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.routes, nil
	}
	cfgs, err := rt.store.ListProviderConfigs(ctx, tenantID)
	if err != nil {
		return nil, fmt.Errorf("loom: tenant providers: %w", err)
	}
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
		rt.tenants.Add(tenantID, tenantRoutes{routes, now.Add(rt.ttl)})
	}
	rt.mu.Unlock()
	return routes, nil
}

// forget drops a tenant's cached routes, after its configuration changed.
func (rt *router) forget(tenantID string) {
	rt.mu.Lock()
	rt.gen++
	rt.tenants.Remove(tenantID)
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
