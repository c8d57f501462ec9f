package rollup

import (
	"cmp"
	"slices"
	"time"

	"github.com/loom-gateway/loom/tracing"
)

// Grains are the bucket lengths every trace is counted in, longest first: each a multiple
// of the next, and each dividing a UTC day. They match the buckets dashboards ask for (a
// minute for an hour's view, 15 minutes for a day's, an hour for a week's, six hours for a
// month's), so a query reads a few hundred rows per bucket at most.
var Grains = [...]time.Duration{6 * time.Hour, time.Hour, 15 * time.Minute, time.Minute}

// compactEvery is how many appends a row's histograms take before the step re-encodes them.
const compactEvery = 16

// Key identifies one rollup row.
type Key struct {
	TenantID    string
	Grain       time.Duration // one of Grains
	Start       time.Time     // the bucket's start, a multiple of Grain since the Unix epoch
	Provider    string
	Model       string
	APIKeyID    string
	StatusClass int // Status / 100
	// Total marks a row of trace_rollup_totals: every provider, model and key of the tenant
	// together (Provider, Model and APIKeyID are empty).
	Total bool
}

func compareKeys(a, b Key) int {
	if a.Total != b.Total {
		if a.Total {
			return 1
		}
		return -1
	}
	return cmp.Or(cmp.Compare(a.TenantID, b.TenantID), cmp.Compare(a.Grain, b.Grain), a.Start.Compare(b.Start),
		cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Model, b.Model), cmp.Compare(a.APIKeyID, b.APIKeyID),
		cmp.Compare(a.StatusClass, b.StatusClass))
}

// Counts are the aggregates of one rollup row.
type Counts struct {
	Requests, PromptTokens, CompletionTokens, CachedTokens, ReasoningTokens int64
	CostMicroUSD                                                            int64 // priced traces only
	Unpriced                                                                int64
	LatencyUS, TTFBUS, TTFBCount, OverheadUS                                int64
	Latency, TTFB, Overhead                                                 Hist // TTFB: ttfb_us > 0 only
}

// AddTrace counts one trace with these figures.
func (c *Counts) AddTrace(promptTokens, completionTokens, cachedTokens, reasoningTokens int64, cost *int64, latencyUS, ttfbUS, overheadUS int64) {
	c.Requests++
	c.PromptTokens += promptTokens
	c.CompletionTokens += completionTokens
	c.CachedTokens += cachedTokens
	c.ReasoningTokens += reasoningTokens
	if cost == nil {
		c.Unpriced++
	} else {
		c.CostMicroUSD += *cost
	}
	c.LatencyUS += latencyUS
	c.Latency.Add(latencyUS)
	if ttfbUS > 0 {
		c.TTFBUS += ttfbUS
		c.TTFBCount++
		c.TTFB.Add(ttfbUS)
	}
	c.OverheadUS += overheadUS
	c.Overhead.Add(overheadUS)
}

// Merge adds o to c.
func (c *Counts) Merge(o *Counts) {
	c.Requests += o.Requests
	c.PromptTokens += o.PromptTokens
	c.CompletionTokens += o.CompletionTokens
	c.CachedTokens += o.CachedTokens
	c.ReasoningTokens += o.ReasoningTokens
	c.CostMicroUSD += o.CostMicroUSD
	c.Unpriced += o.Unpriced
	c.LatencyUS += o.LatencyUS
	c.TTFBUS += o.TTFBUS
	c.TTFBCount += o.TTFBCount
	c.OverheadUS += o.OverheadUS
	c.Latency.Merge(o.Latency)
	c.TTFB.Merge(o.TTFB)
	c.Overhead.Merge(o.Overhead)
}

// Row is one rollup row.
type Row struct {
	Key
	Counts
}

// StatusClass is the class a status is counted in: its hundreds (2 for 200, 4 for 429).
func StatusClass(status int) int { return status / 100 }

// traceKey is the key of t's row of grain g.
func traceKey(t *tracing.Trace, g time.Duration) Key {
	return Key{TenantID: t.TenantID, Grain: g, Start: bucketStart(t.CreatedAt.UTC(), g), Provider: t.Provider,
		Model: t.Model, APIKeyID: t.APIKeyID, StatusClass: StatusClass(t.Status)}
}

func (c *Counts) addTrace(t *tracing.Trace) {
	c.AddTrace(t.PromptTokens, t.CompletionTokens, t.CachedTokens, t.ReasoningTokens, t.CostMicroUSD,
		t.LatencyUS, t.TTFBUS, t.OverheadUS)
}

// aggregator counts traces, or delta rows, into rows of every grain: for each grain one per
// distinct trace key and one total per tenant and status class. Its rows come sorted by key
// (totals last): the order in which concurrent folders lock rows.
type aggregator map[Key]*Row

// row is k's row, added if new.
func (a aggregator) row(k Key) *Row {
	r := a[k]
	if r == nil {
		r = &Row{Key: k}
		a[k] = r
	}
	return r
}

// keys are the keys of the rows, of every grain and both tables, counting what k's row
// (of any grain) counts.
func keys(k Key) [2 * len(Grains)]Key {
	var out [2 * len(Grains)]Key
	for i, g := range Grains {
		full := Key{TenantID: k.TenantID, Grain: g, Start: bucketStart(k.Start, g), Provider: k.Provider, Model: k.Model,
			APIKeyID: k.APIKeyID, StatusClass: k.StatusClass}
		out[2*i] = full
		out[2*i+1] = Key{TenantID: k.TenantID, Grain: g, Start: full.Start, StatusClass: k.StatusClass, Total: true}
	}
	return out
}

func (a aggregator) add(t *tracing.Trace) {
	for _, k := range keys(traceKey(t, time.Minute)) {
		a.row(k).addTrace(t)
	}
}

// rows returns the rows sorted by key.
func (a aggregator) rows() []*Row {
	rows := make([]*Row, 0, len(a))
	for _, r := range a {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b *Row) int { return compareKeys(a.Key, b.Key) })
	return rows
}

// bucketStart is the start of the grain-long bucket holding t, counted from the Unix epoch
// at microsecond precision (the stores' precision).
func bucketStart(t time.Time, g time.Duration) time.Time {
	us, gus := t.UnixMicro(), g.Microseconds()
	start := us - us%gus
	if us%gus < 0 {
		start -= gus
	}
	return time.UnixMicro(start).UTC()
}
