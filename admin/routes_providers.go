package admin

import (
	"net/http"
	"net/url"
	"time"

	"github.com/loom-gateway/loom/tenancy"
)

// Bounds of a provider configuration.
const (
	maxProviderName = 64
	maxURLLen       = 2048
	maxModels       = 1000
	maxModelLen     = 256
	maxAPIKeyLen    = 4096
)

// providerJSON is a provider configuration as the API shows it: the upstream API key only
// by its last four characters.
type providerJSON struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	BaseURL     string    `json:"base_url"`
	APIVersion  string    `json:"api_version"`
	Models      []string  `json:"models"`
	HasAPIKey   bool      `json:"has_api_key"`
	APIKeyLast4 string    `json:"api_key_last4"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func providerOut(c tenancy.ProviderConfig) providerJSON {
	models := c.Models
	if models == nil {
		models = []string{}
	}
	return providerJSON{Name: c.Name, Kind: c.Kind, BaseURL: c.BaseURL, APIVersion: c.APIVersion, Models: models,
		HasAPIKey: len(c.SealedAPIKey) > 0, APIKeyLast4: c.KeyLast4, UpdatedAt: c.UpdatedAt}
}

func (h *Handler) listProviders(w http.ResponseWriter, r *http.Request, u who) {
	listOfTenant(h, w, r, h.opt.Tenancy.ListProviderConfigs, providerOut)
}

type providerRequest struct {
	Kind       string   `json:"kind"`
	BaseURL    string   `json:"base_url"`
	APIVersion string   `json:"api_version"`
	Models     []string `json:"models"`
	APIKey     string   `json:"api_key"`
}

func (p providerRequest) check() error {
	if err := checkIdent("kind", p.Kind, maxProviderName); err != nil {
		return err
	}
	if p.BaseURL != "" {
		u, err := url.Parse(p.BaseURL)
		if len(p.BaseURL) > maxURLLen || !validText(p.BaseURL) || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return invalid("base_url", "The base URL must be an absolute http(s) URL without credentials, at most 2048 bytes.")
		}
	}
	if p.APIVersion != "" {
		if err := checkIdent("api_version", p.APIVersion, maxProviderName); err != nil {
			return err
		}
	}
	if len(p.Models) > maxModels {
		return invalid("models", "At most 1000 models.")
	}
	for _, m := range p.Models {
		if m == "" || len(m) > maxModelLen || !validText(m) {
			return invalid("models", "Each model is 1 to 256 bytes of UTF-8 without control characters.")
		}
	}
	if len(p.APIKey) > maxAPIKeyLen || !validText(p.APIKey) {
		return invalid("api_key", "The API key is at most 4096 bytes without control characters.")
	}
	return nil
}

func (h *Handler) putProvider(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := checkIdent("name", name, maxProviderName); err != nil {
		h.fail(w, r, err)
		return
	}
	var req providerRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := req.check(); err != nil {
		h.fail(w, r, err)
		return
	}
	c := tenancy.ProviderConfig{TenantID: id, Name: name, Kind: req.Kind, BaseURL: req.BaseURL, APIVersion: req.APIVersion, Models: req.Models}
	if err := h.opt.Tenancy.PutProviderConfig(r.Context(), c, req.APIKey); err != nil {
		h.fail(w, r, err)
		return
	}
	detail := "kind " + quote(req.Kind)
	if req.APIKey != "" {
		detail += ", with an API key"
	}
	h.record(r, u, "provider.put", id+"/"+name, detail)
	cs, err := h.opt.Tenancy.ListProviderConfigs(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, c := range cs {
		if c.Name == name {
			writeJSON(w, http.StatusOK, providerOut(c))
			return
		}
	}
	h.fail(w, r, tenancy.ErrNotFound)
}

func (h *Handler) deleteProvider(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := checkIdent("name", name, maxProviderName); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.opt.Tenancy.DeleteProviderConfig(r.Context(), id, name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "provider.delete", id+"/"+name, "")
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "object": "provider_config", "deleted": true})
}
