package loom

import "github.com/loom-gateway/loom/admin"

// SetAdminTenancy makes the admin API of a gateway built from c manage tenants through
// what f returns for it, instead of the gateway's Service.
func SetAdminTenancy(c *AdminConfig, f func(*Gateway) admin.Tenancy) { c.tenancy = f }
