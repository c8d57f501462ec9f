package loom

import (
	"net/http"

	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
)

// AdminConfig turns on the admin API under /admin/ (see package admin): sign-in of admin
// users, tenants, keys, provider configurations, spend and the admin audit log. It works
// through the gateway's own tenancy Service (Gateway.Admin), so a key revoked or a tenant
// deactivated through it is refused from this gateway's next request on.
type AdminConfig struct {
	// Users signs admins in and writes the admin audit log, over an admin.Store in the
	// same database as Config.Store. Required.
	Users *admin.Users
	// Spend answers GET /admin/spend across tenants. If nil, that route answers 501.
	Spend analytics.Spender
	// ClientAddr names a request's client for sign-in throttling and the audit log. If
	// nil, the host of r.RemoteAddr (behind a proxy, give one that reads its header).
	ClientAddr func(r *http.Request) string
}

// mountAdmin serves the admin API on mux.
func (g *Gateway) mountAdmin(mux *http.ServeMux, cfg *AdminConfig) error {
	h, err := admin.NewHandler(admin.Options{Users: cfg.Users, Tenancy: g.admin, Spender: cfg.Spend,
		ClientAddr: cfg.ClientAddr, Logger: g.log})
	if err != nil {
		return err
	}
	mux.Handle("/admin/", h)
	return nil
}
