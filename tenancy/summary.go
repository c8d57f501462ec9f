package tenancy

import "time"

// TenantSummary is a tenant with its key counts and when any of its keys was last used
// (nil if never), as the admin's tenant list shows it.
type TenantSummary struct {
	Tenant
	Keys, ActiveKeys int
	LastUsedAt       *time.Time
}
