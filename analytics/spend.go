package analytics

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/loom-gateway/loom/rollup"
)

var (
	_ Spender = (*PostgresStore)(nil)
	_ Spender = (*SQLiteStore)(nil)
)

// SpendQuery asks for the spend in [From, To) (zero times: unbounded), of one tenant or,
// with TenantID empty, of every tenant.
type SpendQuery struct {
	TenantID string // empty: all tenants
	From, To time.Time
}

// SpendRow is the spend of one tenant's API key on one model. CostMicroUSD sums the priced
// requests only; Unpriced counts the requests whose cost is unknown.
type SpendRow struct {
	TenantID, APIKeyID, Model      string
	Requests                       int64
	PromptTokens, CompletionTokens int64
	CostMicroUSD                   int64
	Unpriced                       int64
}

// Spender reports spend across tenants, for operators (the admin API); it is not scoped to
// one tenant, so it must never be reachable with a tenant's key.
type Spender interface {
	// Spend returns the rows of q's range by tenant, API key and model, in that order,
	// exact (from the rollups, and the traces at the ends of the range).
	Spend(ctx context.Context, q SpendQuery) ([]SpendRow, error)
}

// Spend implements Spender.
func (s *sqlStore) Spend(ctx context.Context, sq SpendQuery) ([]SpendRow, error) {
	from, to := sq.From, sq.To
	if from.IsZero() {
		from = minTime
	}
	if to.IsZero() {
		to = maxTime
	}
	if to.Before(from) {
		return nil, fmt.Errorf("analytics: spend: to %v is before from %v", to, from)
	}
	var out []SpendRow
	err := s.snapshot(ctx, func(s *sqlStore) error {
		var err error
		out, err = s.spendAt(ctx, sq.TenantID, plan(from, to, rollupGrains()))
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b SpendRow) int {
		return cmp.Or(cmp.Compare(a.TenantID, b.TenantID), cmp.Compare(a.APIKeyID, b.APIKeyID), cmp.Compare(a.Model, b.Model))
	})
	return out, nil
}

// spendAt is Spend over the spans on a store reading one snapshot.
func (s *sqlStore) spendAt(ctx context.Context, tenantID string, spans []span) ([]SpendRow, error) {
	byKey := map[[3]string]*SpendRow{}
	add := func(x SpendRow) {
		k := [3]string{x.TenantID, x.APIKeyID, x.Model}
		if y := byKey[k]; y != nil {
			y.Requests += x.Requests
			y.PromptTokens += x.PromptTokens
			y.CompletionTokens += x.CompletionTokens
			y.CostMicroUSD += x.CostMicroUSD
			y.Unpriced += x.Unpriced
		} else {
			byKey[k] = &x
		}
	}
	scan := func(r rows) error {
		var x SpendRow
		if err := r.Scan(&x.TenantID, &x.APIKeyID, &x.Model, &x.Requests, &x.PromptTokens, &x.CompletionTokens,
			&x.CostMicroUSD, &x.Unpriced); err != nil {
			return err
		}
		add(x)
		return nil
	}
	for _, sp := range spans {
		rollups := sp.grain != 0
		q := s.stmt()
		if rollups {
			q.sql("SELECT tenant_id, api_key_id, model, ", s.sum("requests"), ", ", s.sum("prompt_tokens"), ", ",
				s.sum("completion_tokens"), ", ", s.sum("cost_micro_usd"), ", ", s.sum("unpriced"), " FROM trace_rollups WHERE true")
		} else {
			q.sql("SELECT tenant_id, api_key_id, model, count(*), ", s.sum("prompt_tokens"), ", ", s.sum("completion_tokens"), ", ",
				s.sum("cost_micro_usd"), ", count(*) FILTER (WHERE cost_micro_usd IS NULL) FROM traces WHERE true")
		}
		if tenantID != "" {
			q.sql(" AND tenant_id = ", q.arg(tenantID))
		}
		q.span(sp)
		q.sql(" GROUP BY 1, 2, 3")
		if err := s.each(ctx, q, scan); err != nil {
			return nil, fmt.Errorf("analytics: spend: %w", err)
		}
	}
	err := s.deltas(ctx, tenantID, spans, func(r *rollup.Row) {
		add(SpendRow{TenantID: r.TenantID, APIKeyID: r.APIKeyID, Model: r.Model, Requests: r.Requests, PromptTokens: r.PromptTokens,
			CompletionTokens: r.CompletionTokens, CostMicroUSD: r.CostMicroUSD, Unpriced: r.Unpriced})
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: spend from rollup deltas: %w", err)
	}
	out := make([]SpendRow, 0, len(byKey))
	for _, x := range byKey {
		out = append(out, *x)
	}
	return out, nil
}
