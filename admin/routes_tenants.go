package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/loom-gateway/loom/tenancy"
)

// maxIDLen bounds an id in a path; tenant and key ids are UUIDs.
const maxIDLen = 128

type tenantJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	Keys       int        `json:"keys"`
	ActiveKeys int        `json:"active_keys"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func tenantOut(s tenancy.TenantSummary) tenantJSON {
	return tenantJSON{ID: s.ID, Name: s.Name, Status: s.Status, CreatedAt: s.CreatedAt, Keys: s.Keys,
		ActiveKeys: s.ActiveKeys, LastUsedAt: s.LastUsedAt}
}

// summarize counts a tenant's keys and finds when one was last used.
func summarize(t tenancy.Tenant, keys []tenancy.APIKey) tenancy.TenantSummary {
	s := tenancy.TenantSummary{Tenant: t, Keys: len(keys)}
	for _, k := range keys {
		if k.Status == tenancy.KeyActive {
			s.ActiveKeys++
		}
		if k.LastUsedAt != nil && (s.LastUsedAt == nil || k.LastUsedAt.After(*s.LastUsedAt)) {
			s.LastUsedAt = k.LastUsedAt
		}
	}
	return s
}

// tenantID reads and checks the {id} of the path.
func (h *Handler) tenantID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := checkIdent("id", id, maxIDLen); err != nil {
		h.fail(w, r, err)
		return "", false
	}
	return id, true
}

func (h *Handler) listTenants(w http.ResponseWriter, r *http.Request, u who) {
	ss, err := h.opt.Tenancy.ListTenantSummaries(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]tenantJSON, len(ss))
	for i, s := range ss {
		out[i] = tenantOut(s)
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (h *Handler) createTenant(w http.ResponseWriter, r *http.Request, u who) {
	var req struct {
		Name string `json:"name"`
	}
	if !h.decode(w, r, &req) {
		return
	}
	if err := checkName("name", req.Name); err != nil {
		h.fail(w, r, err)
		return
	}
	t, err := h.opt.Tenancy.CreateTenant(r.Context(), req.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "tenant.create", t.ID, "name "+quote(t.Name))
	writeJSON(w, http.StatusCreated, tenantOut(tenancy.TenantSummary{Tenant: t}))
}

// summary reads one tenant with its key counts.
func (h *Handler) summary(r *http.Request, id string) (tenancy.TenantSummary, error) {
	t, err := h.opt.Tenancy.GetTenant(r.Context(), id)
	if err != nil {
		return tenancy.TenantSummary{}, err
	}
	keys, err := h.opt.Tenancy.ListKeys(r.Context(), id)
	if err != nil {
		return tenancy.TenantSummary{}, err
	}
	return summarize(t, keys), nil
}

func (h *Handler) getTenant(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	s, err := h.summary(r, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantOut(s))
}

func (h *Handler) patchTenant(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	var req struct {
		Name   *string `json:"name"`
		Status *string `json:"status"`
	}
	if !h.decode(w, r, &req) {
		return
	}
	switch {
	case req.Name == nil && req.Status == nil:
		h.fail(w, r, invalid("name", "Give a new name, a status, or both."))
		return
	case req.Name != nil:
		if err := checkName("name", *req.Name); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if req.Status != nil && *req.Status != tenancy.TenantActive && *req.Status != tenancy.TenantInactive {
		h.fail(w, r, invalid("status", `The status is "active" or "inactive".`))
		return
	}
	if _, err := h.opt.Tenancy.GetTenant(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Name != nil {
		if err := h.opt.Tenancy.RenameTenant(r.Context(), id, *req.Name); err != nil {
			h.fail(w, r, err)
			return
		}
		h.record(r, u, "tenant.rename", id, "name "+quote(*req.Name))
	}
	if req.Status != nil {
		if err := h.opt.Tenancy.SetTenantStatus(r.Context(), id, *req.Status); err != nil {
			h.fail(w, r, err)
			return
		}
		action := "tenant.deactivate"
		if *req.Status == tenancy.TenantActive {
			action = "tenant.activate"
		}
		h.record(r, u, action, id, "")
	}
	h.getTenant(w, r, u)
}

func (h *Handler) deleteTenant(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	if c := r.URL.Query().Get("confirm"); c != id {
		h.fail(w, r, invalid("confirm", "A hard delete cannot be undone: repeat the tenant id as ?confirm=<tenant id>."))
		return
	}
	if err := h.opt.Tenancy.DeleteTenant(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "tenant.delete", id, "hard delete")
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "tenant", "deleted": true})
}

type keyJSON struct {
	ID         string     `json:"id"`
	TenantID   string     `json:"tenant_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	// Key is the raw key, only in the answer that creates it.
	Key string `json:"key,omitempty"`
}

func keyOut(k tenancy.APIKey) keyJSON {
	return keyJSON{ID: k.ID, TenantID: k.TenantID, Name: k.Name, Prefix: k.Prefix, Status: k.Status,
		CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt}
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request, u who) {
	listOfTenant(h, w, r, h.opt.Tenancy.ListKeys, keyOut)
}

// listOfTenant answers the list of one tenant's items, each as out makes it; a tenant that
// does not exist is 404, not an empty list.
func listOfTenant[T, J any](h *Handler, w http.ResponseWriter, r *http.Request, list func(context.Context, string) ([]T, error), out func(T) J) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	if _, err := h.opt.Tenancy.GetTenant(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	items, err := list(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	js := make([]J, len(items))
	for i, x := range items {
		js[i] = out(x)
	}
	writeJSON(w, http.StatusOK, newList(js))
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if !h.decode(w, r, &req) {
		return
	}
	if err := checkName("name", req.Name); err != nil {
		h.fail(w, r, err)
		return
	}
	raw, k, err := h.opt.Tenancy.CreateKey(r.Context(), id, req.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "key.create", id+"/"+k.ID, "name "+quote(k.Name)+", prefix "+k.Prefix)
	out := keyOut(k)
	out.Key = raw
	writeJSON(w, http.StatusCreated, out)
}

func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, u who) {
	id, ok := h.tenantID(w, r)
	if !ok {
		return
	}
	keyID := r.PathValue("key_id")
	if err := checkIdent("key_id", keyID, maxIDLen); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.opt.Tenancy.RevokeKey(r.Context(), id, keyID); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "key.revoke", id+"/"+keyID, "")
	keys, err := h.opt.Tenancy.ListKeys(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, k := range keys {
		if k.ID == keyID {
			writeJSON(w, http.StatusOK, keyOut(k))
			return
		}
	}
	h.fail(w, r, tenancy.ErrNotFound)
}

// quote is s in double quotes with anything odd escaped, for an audit detail.
func quote(s string) string {
	if len(s) > MaxNameLen {
		s = s[:MaxNameLen]
	}
	return strconv.Quote(s)
}
