package loom

import (
	"fmt"
	"net/http"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/tracing"
)

// analyticsHandler builds the analytics API over Config.Analytics, behind the data
// plane's API-key authentication: each tenant's key reads that tenant's traces only.
func (g *Gateway) analyticsHandler() (*analytics.Handler, error) {
	var open func(tenantID, traceID, part string, keyVersion int, sealed []byte) ([]byte, error)
	if k := g.cfg.Keyring; k != nil {
		open = func(tenantID, traceID, part string, keyVersion int, sealed []byte) ([]byte, error) {
			b, err := k.Open(tenantID, tracing.BodyRecordID(traceID, part), keyVersion, sealed)
			if err != nil {
				// Rows written before bodies were sealed apart were sealed under the trace
				// id alone; a body moved from its own slot opens under neither.
				if old, oerr := k.Open(tenantID, traceID, keyVersion, sealed); oerr == nil {
					return old, nil
				}
			}
			return b, err
		}
	}
	h, err := analytics.NewHandler(analytics.HandlerConfig{
		Store: g.cfg.Analytics,
		Tenant: func(r *http.Request) (string, error) {
			p, err := g.authenticate(r)
			return p.TenantID, err
		},
		WriteError: func(w http.ResponseWriter, _ *http.Request, err error) { writeError(w, toAPIError(err)) },
		Open:       open,
		Now:        g.cfg.Now,
		Logger:     g.log,
	})
	if err != nil {
		return nil, fmt.Errorf("loom: %w", err)
	}
	return h, nil
}

// mountAnalytics serves h's GET patterns on mux; other methods get 405.
func mountAnalytics(mux *http.ServeMux, h *analytics.Handler) {
	for _, p := range analytics.Paths() {
		mux.Handle("GET "+p, h)
		// /v1/traces/{id} answers the other methods of /v1/traces/export too (a pattern of
		// its own would conflict with GET /v1/traces/{id}).
		if p != "/v1/traces/export" {
			mux.HandleFunc(p, methodNotAllowed("GET"))
		}
	}
}
