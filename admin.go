package loom

import (
	"context"
	"net/http"

	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/tenancy"
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

	// tenancy, if set, replaces the gateway's Service (tests of Tenancy methods).
	tenancy func(*Gateway) admin.Tenancy
}

// mountAdmin serves the admin API on mux.
func (g *Gateway) mountAdmin(mux *http.ServeMux, cfg *AdminConfig) error {
	var t admin.Tenancy = gatewayTenancy{g}
	if cfg.tenancy != nil {
		t = cfg.tenancy(g)
	}
	h, err := admin.NewHandler(admin.Options{Users: cfg.Users, Tenancy: t, Spender: cfg.Spend,
		ClientAddr: cfg.ClientAddr, Logger: g.log})
	if err != nil {
		return err
	}
	mux.Handle("/admin/", h)
	return nil
}

// gatewayTenancy is the gateway's tenancy Service as admin.Tenancy. Methods the Service
// does not offer answer admin.ErrUnsupported (501); once it offers them all, the Service
// itself is the Tenancy and this adapter goes.
type gatewayTenancy struct{ g *Gateway }

var _ admin.Tenancy = gatewayTenancy{}

func (t gatewayTenancy) CreateTenant(ctx context.Context, name string) (tenancy.Tenant, error) {
	return t.g.admin.CreateTenant(ctx, name)
}

func (t gatewayTenancy) GetTenant(ctx context.Context, id string) (tenancy.Tenant, error) {
	return t.g.admin.GetTenant(ctx, id)
}

func (t gatewayTenancy) ListTenantSummaries(ctx context.Context) ([]tenancy.TenantSummary, error) {
	if s, ok := any(t.g.admin).(interface {
		ListTenantSummaries(context.Context) ([]tenancy.TenantSummary, error)
	}); ok {
		return s.ListTenantSummaries(ctx)
	}
	ts, err := t.g.admin.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]tenancy.TenantSummary, len(ts))
	for i, x := range ts {
		keys, err := t.g.admin.ListKeys(ctx, x.ID)
		if err != nil {
			return nil, err
		}
		out[i] = tenancy.TenantSummary{Tenant: x, Keys: len(keys)}
		for _, k := range keys {
			if k.Status == tenancy.KeyActive {
				out[i].ActiveKeys++
			}
			if k.LastUsedAt != nil && (out[i].LastUsedAt == nil || k.LastUsedAt.After(*out[i].LastUsedAt)) {
				out[i].LastUsedAt = k.LastUsedAt
			}
		}
	}
	return out, nil
}

func (t gatewayTenancy) RenameTenant(ctx context.Context, id, name string) error {
	if s, ok := any(t.g.admin).(interface {
		RenameTenant(context.Context, string, string) error
	}); ok {
		return s.RenameTenant(ctx, id, name)
	}
	return admin.ErrUnsupported
}

func (t gatewayTenancy) SetTenantStatus(ctx context.Context, id, status string) error {
	return t.g.admin.SetTenantStatus(ctx, id, status)
}

func (t gatewayTenancy) DeleteTenant(ctx context.Context, id string) error {
	if s, ok := any(t.g.admin).(interface {
		DeleteTenant(context.Context, string) error
	}); ok {
		return s.DeleteTenant(ctx, id)
	}
	return admin.ErrUnsupported
}

func (t gatewayTenancy) CreateKey(ctx context.Context, tenantID, name string) (string, tenancy.APIKey, error) {
	return t.g.admin.CreateKey(ctx, tenantID, name)
}

func (t gatewayTenancy) ListKeys(ctx context.Context, tenantID string) ([]tenancy.APIKey, error) {
	return t.g.admin.ListKeys(ctx, tenantID)
}

func (t gatewayTenancy) RevokeKey(ctx context.Context, tenantID, keyID string) error {
	return t.g.admin.RevokeKey(ctx, tenantID, keyID)
}

// PutProviderConfig seals the key and purges the routes (SetTenantProvider).
func (t gatewayTenancy) PutProviderConfig(ctx context.Context, c tenancy.ProviderConfig, apiKey string) error {
	if s, ok := any(t.g.admin).(interface {
		PutProviderConfig(context.Context, tenancy.ProviderConfig, string) error
	}); ok {
		return s.PutProviderConfig(ctx, c, apiKey)
	}
	if _, err := t.g.admin.GetTenant(ctx, c.TenantID); err != nil {
		return err
	}
	if s, ok := any(t.g).(interface {
		SetTenantProvider(context.Context, tenancy.ProviderConfig, string) error
	}); ok {
		return s.SetTenantProvider(ctx, c, apiKey)
	}
	return admin.ErrUnsupported
}

func (t gatewayTenancy) ListProviderConfigs(ctx context.Context, tenantID string) ([]tenancy.ProviderConfig, error) {
	return t.g.admin.ListProviderConfigs(ctx, tenantID)
}

func (t gatewayTenancy) DeleteProviderConfig(ctx context.Context, tenantID, name string) error {
	if s, ok := any(t.g.admin).(interface {
		DeleteProviderConfig(context.Context, string, string) error
	}); ok {
		return s.DeleteProviderConfig(ctx, tenantID, name)
	}
	return admin.ErrUnsupported
}
