package admin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/loom-gateway/loom/analytics"
)

// Bounds of the report routes.
const (
	defaultSpendRange = 30 * 24 * time.Hour
	maxSpendRange     = 400 * 24 * time.Hour
	defaultAuditLimit = 50
	maxAuditLimit     = 200
)

type spendJSON struct {
	TenantID         string `json:"tenant_id"`
	APIKeyID         string `json:"api_key_id"`
	Model            string `json:"model"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CostMicroUSD     int64  `json:"cost_micro_usd"`
	Unpriced         int64  `json:"unpriced_requests"`
}

// spend answers GET /admin/spend?from=&to=&tenant=: RFC 3339 times, [from, to), by
// default the 30 days to now; tenant empty means every tenant.
func (h *Handler) spend(w http.ResponseWriter, r *http.Request, u who) {
	if h.opt.Spender == nil {
		writeError(w, http.StatusNotImplemented, "server_error", "spend_unavailable", "",
			"Spend is not available: this gateway has no analytics store with spend rollups.")
		return
	}
	q := r.URL.Query()
	to := h.opt.Users.opt.Now().UTC()
	if v := q.Get("to"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			h.fail(w, r, invalid("to", "to is an RFC 3339 time, e.g. 2026-01-31T00:00:00Z."))
			return
		}
		to = t
	}
	from := to.Add(-defaultSpendRange)
	if v := q.Get("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			h.fail(w, r, invalid("from", "from is an RFC 3339 time, e.g. 2026-01-01T00:00:00Z."))
			return
		}
		from = t
	}
	if !from.Before(to) || to.Sub(from) > maxSpendRange {
		h.fail(w, r, invalid("from", "from must be before to, at most 400 days apart."))
		return
	}
	tenant := q.Get("tenant")
	if tenant != "" {
		if err := checkIdent("tenant", tenant, maxIDLen); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	rows, err := h.opt.Spender.Spend(r.Context(), analytics.SpendQuery{TenantID: tenant, From: from.UTC(), To: to.UTC()})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]spendJSON, len(rows))
	for i, x := range rows {
		out[i] = spendJSON{TenantID: x.TenantID, APIKeyID: x.APIKeyID, Model: x.Model, Requests: x.Requests,
			PromptTokens: x.PromptTokens, CompletionTokens: x.CompletionTokens, CostMicroUSD: x.CostMicroUSD, Unpriced: x.Unpriced}
	}
	writeJSON(w, http.StatusOK, struct {
		list[spendJSON]
		From time.Time `json:"from"`
		To   time.Time `json:"to"`
	}{newList(out), from.UTC(), to.UTC()})
}

type eventJSON struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	Target     string    `json:"target"`
	ClientAddr string    `json:"client_addr"`
	Detail     string    `json:"detail"`
}

// audit answers GET /admin/audit?limit=&before=: newest first; next_before (null on the
// last page) is the before of the next page.
func (h *Handler) audit(w http.ResponseWriter, r *http.Request, u who) {
	q := r.URL.Query()
	limit := defaultAuditLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			h.fail(w, r, invalid("limit", "limit is 1 to 200."))
			return
		}
		limit = n
	}
	var before int64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			h.fail(w, r, invalid("before", "before is an audit record id (a positive integer)."))
			return
		}
		before = n
	}
	es, err := h.opt.Users.Audit(r.Context(), limit+1, before)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var next *int64
	if len(es) > limit {
		es = es[:limit]
		id := es[limit-1].ID
		next = &id
	}
	out := make([]eventJSON, len(es))
	for i, e := range es {
		out[i] = eventJSON(e)
	}
	writeJSON(w, http.StatusOK, struct {
		list[eventJSON]
		HasMore    bool   `json:"has_more"`
		NextBefore *int64 `json:"next_before"`
	}{newList(out), next != nil, next})
}
