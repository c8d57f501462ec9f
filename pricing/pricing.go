package pricing

import (
	"math"
	"math/bits"
)

// Usage is the token usage of one request, OpenAI style: PromptTokens includes every
// kind of input token (cache reads, cache writes, audio), and CompletionTokens includes
// reasoning and audio output tokens. Adapters for providers that count otherwise
// (Anthropic reports cache reads and writes apart from input tokens) convert before
// pricing.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64 // prompt tokens read from the provider's cache
	// CacheWrite5mTokens and CacheWrite1hTokens are prompt tokens written to the
	// provider's cache (Anthropic) with a 5-minute or 1-hour lifetime.
	CacheWrite5mTokens int64
	CacheWrite1hTokens int64
	// AudioPromptTokens and AudioCompletionTokens are the audio part of the prompt and
	// of the completion (OpenAI audio models).
	AudioPromptTokens     int64
	AudioCompletionTokens int64
	// ServiceTier is the tier the response says served the request ("flex",
	// "priority", …). Empty, "default", "auto" and "standard" mean the standard prices.
	ServiceTier string
}

// Rates are the prices of one model in one tier, in micro-USD per million tokens (2.50 USD
// → 2_500_000). A nil optional rate is one the provider does not charge separately or the
// table does not know: nil CachedInput charges cache reads at Input (providers without a
// cache report none); nil cache-write or audio rates make a usage with such tokens
// unpriced, since charging them as plain input would under-price them.
type Rates struct {
	Input        int64
	Output       int64
	CachedInput  *int64
	CacheWrite5m *int64
	CacheWrite1h *int64
	AudioInput   *int64
	AudioOutput  *int64
}

// LongContext is a model's pricing above a prompt size: a request whose prompt (all input
// tokens, cached and cache writes included) exceeds Threshold is charged Rates for all of
// its tokens, as Anthropic prices Claude Sonnet 4 beyond 200k input tokens.
type LongContext struct {
	Threshold int64
	Rates
}

// Price is one model's table entry.
type Price struct {
	Rates                        // the standard tier
	LongContext *LongContext     // nil: no long-context tier
	Tiers       map[string]Rates // service tier name ("flex", "priority", "batch") → its rates
	Source      string           // where the prices come from (a pricing page)
	AsOf        string           // the date they were read there
}

// standardTier reports whether a reported service tier is billed at the standard prices.
func standardTier(tier string) bool {
	switch tier {
	case "", "default", "auto", "standard", "standard_only":
		return true
	}
	return false
}

// RatesFor returns the rates that apply to u: the service tier's, else the long-context
// tier's when the prompt exceeds its threshold, else the standard ones. ok is false for a
// service tier the entry has no prices for.
func (p Price) RatesFor(u Usage) (r Rates, ok bool) {
	if !standardTier(u.ServiceTier) {
		r, ok = p.Tiers[u.ServiceTier]
		return r, ok
	}
	if p.LongContext != nil && u.PromptTokens > p.LongContext.Threshold {
		return p.LongContext.Rates, true
	}
	return p.Rates, true
}

// Cost returns the cost of u at price p in micro-USD:
//
//	round-half-up(( cached·cached_input + write5m·cache_write_5m + write1h·cache_write_1h
//	              + audio_in·audio_input + other_prompt·input
//	              + audio_out·audio_output + other_completion·output ) / 10⁶)
//
// at the rates RatesFor picks. Negative counts count as zero; the prompt's parts are
// clamped in that order so they never add up to more than the prompt (and audio output to
// the completion). The arithmetic is exact, rounded once. ok is false when the usage needs
// a rate the entry lacks (a service tier, cache writes or audio it has no price for) or the
// cost does not fit in an int64.
func (p Price) Cost(u Usage) (microUSD int64, ok bool) {
	r, ok := p.RatesFor(u)
	if !ok {
		return 0, false
	}
	rest := max(u.PromptTokens, 0)
	part := func(n int64) int64 {
		n = min(max(n, 0), rest)
		rest -= n
		return n
	}
	cached, w5, w1, audioIn := part(u.CachedTokens), part(u.CacheWrite5mTokens), part(u.CacheWrite1hTokens), part(u.AudioPromptTokens)
	completion := max(u.CompletionTokens, 0)
	audioOut := min(max(u.AudioCompletionTokens, 0), completion)

	var total uint128
	for _, t := range []struct {
		n    int64
		rate *int64
	}{
		{rest, &r.Input}, {cached, cmpOr(r.CachedInput, &r.Input)},
		{w5, r.CacheWrite5m}, {w1, r.CacheWrite1h}, {audioIn, r.AudioInput},
		{completion - audioOut, &r.Output}, {audioOut, r.AudioOutput},
	} {
		if t.n == 0 {
			continue
		}
		if t.rate == nil {
			return 0, false
		}
		total.addMul(t.n, *t.rate)
	}
	total.addMul(1, 500_000) // round half up
	if total.overflow || total.hi >= 1_000_000 {
		return 0, false
	}
	q, _ := bits.Div64(total.hi, total.lo, 1_000_000)
	if q > math.MaxInt64 {
		return 0, false
	}
	return int64(q), true
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// uint128 accumulates a sum of non-negative products without overflowing.
type uint128 struct {
	hi, lo   uint64
	overflow bool
}

func (x *uint128) addMul(a, b int64) {
	if a < 0 || b < 0 { // prices are parsed non-negative and tokens clamped; never here
		x.overflow = true
		return
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	var carry uint64
	x.lo, carry = bits.Add64(x.lo, lo, 0)
	x.hi, carry = bits.Add64(x.hi, hi, carry)
	if carry != 0 {
		x.overflow = true
	}
}
