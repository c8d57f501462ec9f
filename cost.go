package loom

import (
	"cmp"
	"slices"
	"sync"

	"github.com/loom-gateway/loom/internal/estimate"
	"github.com/loom-gateway/loom/pricing"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// maxUnpricedSeries bounds the (provider, model) pairs counted apart as unpriced: model
// names can come from clients and upstreams, and a metric must not grow without bound.
// Further pairs are counted under the model "other".
const maxUnpricedSeries = 1000

// setReportedUsage copies a reported usage into the trace, in full.
func setReportedUsage(t *tracing.Trace, u *provider.Usage) {
	t.PromptTokens, t.CompletionTokens = u.PromptTokens, u.CompletionTokens
	t.CachedTokens = u.PromptTokensDetails.CachedTokens
	t.AudioPromptTokens = u.PromptTokensDetails.AudioTokens
	d := u.CompletionTokensDetails
	t.ReasoningTokens, t.AudioCompletionTokens = d.ReasoningTokens, d.AudioTokens
	t.AcceptedPredictionTokens, t.RejectedPredictionTokens = d.AcceptedPredictionTokens, d.RejectedPredictionTokens
	t.CacheWrite5mTokens, t.CacheWrite1hTokens = u.CacheWrite5mTokens, u.CacheWrite1hTokens
	t.ServiceTier = u.ServiceTier
	t.UsageSource = tracing.UsageReported
}

// pricingUsage is the trace's usage as package pricing prices it.
func pricingUsage(t *tracing.Trace) pricing.Usage {
	return pricing.Usage{
		PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens, CachedTokens: t.CachedTokens,
		CacheWrite5mTokens: t.CacheWrite5mTokens, CacheWrite1hTokens: t.CacheWrite1hTokens,
		AudioPromptTokens: t.AudioPromptTokens, AudioCompletionTokens: t.AudioCompletionTokens,
		ServiceTier: t.ServiceTier,
	}
}

// coster prices traces off the request path (it is the pipeline's Enrich hook), counting
// an estimated usage first, and counts the traces it could not price.
type coster struct {
	prices *pricing.Table
	tokens *estimate.Counter

	mu       sync.Mutex
	unpriced map[UnpricedKey]int64
}

func newCoster(prices *pricing.Table) *coster {
	return &coster{prices: prices, tokens: estimate.New(), unpriced: map[UnpricedKey]int64{}}
}

// price sets the trace's cost: by the model the upstream says served it, else by the
// model asked for. A usage the upstream did not report is estimated from the bodies first
// (the counting costs CPU, which is why it happens here and not on the request path). A
// trace without usage, or whose model has no price, gets no cost (nil), never a guess;
// one with usage but no price is counted as unpriced.
func (c *coster) price(t *tracing.Trace) {
	t.PriceVersion = c.prices.Version()
	switch t.UsageSource {
	case tracing.UsageReported:
	case tracing.UsageEstimated:
		e := c.tokens.Count(cmp.Or(t.ServedModel, t.Model), t.RequestBody, t.ResponseBody)
		t.PromptTokens, t.CompletionTokens, t.UsageMethod = e.PromptTokens, e.CompletionTokens, e.Method
		if t.ResponseTruncated {
			t.UsageMethod += "+truncated" // the completion was counted up to the capture limit
		}
	default:
		return
	}
	u := pricingUsage(t)
	for _, m := range [2]string{t.ServedModel, t.Model} {
		if m == "" {
			continue
		}
		if cost, ok := c.prices.Cost(m, u); ok {
			t.CostMicroUSD = &cost
			return
		}
	}
	c.countUnpriced(UnpricedKey{Provider: t.Provider, Model: cmp.Or(t.ServedModel, t.Model)})
}

func (c *coster) countUnpriced(k UnpricedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.unpriced[k]; !ok && len(c.unpriced) >= maxUnpricedSeries {
		k.Model = "other"
	}
	c.unpriced[k]++
}

// UnpricedKey names a series of unpriced requests.
type UnpricedKey struct {
	Provider string
	Model    string // as the upstream reported it, else as asked for; "other" past the bound
}

// UnpricedCount is how many requests of one provider and model had usage but no price.
type UnpricedCount struct {
	UnpricedKey
	Requests int64
}

// UnpricedRequests reports, per provider and model, the requests since New whose usage
// could not be priced (the model, its service tier or a kind of token it used is not in
// the price table), sorted by provider and model. A model appears once it is met, so an
// alert can fire on any of them. It is empty when tracing is off (pricing happens in the
// trace pipeline) or when Config.Tracing.Enrich replaces the gateway's pricing.
func (g *Gateway) UnpricedRequests() []UnpricedCount {
	if g.coster == nil {
		return nil
	}
	c := g.coster
	c.mu.Lock()
	out := make([]UnpricedCount, 0, len(c.unpriced))
	for k, n := range c.unpriced {
		out = append(out, UnpricedCount{k, n})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b UnpricedCount) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Model, b.Model))
	})
	return out
}
