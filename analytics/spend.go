package analytics

import (
	"context"
	"time"
)

// SpendQuery asks for spend over [From, To), for one tenant or, with TenantID empty, all.
type SpendQuery struct {
	TenantID string // empty: all tenants
	From, To time.Time
}

// SpendRow is the spend of one tenant's key on one model over a SpendQuery's range.
// Unpriced counts requests whose model had no price (their cost is not in CostMicroUSD).
type SpendRow struct {
	TenantID, APIKeyID, Model      string
	Requests                       int64
	PromptTokens, CompletionTokens int64
	CostMicroUSD                   int64
	Unpriced                       int64
}

// Spender answers spend across tenants, for the admin's view: unlike Store, it is not
// scoped to one tenant, so only the admin API may hold one.
type Spender interface {
	Spend(ctx context.Context, q SpendQuery) ([]SpendRow, error)
}
