package analytics

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/loom-gateway/loom/rollup"
)

// The stores answer Metrics, Values and Spend from the rollups (package rollup) where
// they can: a range is cut into the spans that rollup rows of some grain cover whole (the
// longest grain first) and the rest, under a minute at each end, which the traces answer.
// Counts and sums are exact either way; percentiles come from the rollups' histograms
// merged with the edge traces' values, so they are approximate (within
// rollup.RelativeError) and marked so. A query whose buckets do not fall on minute
// boundaries, or grouped by status (rollups keep the status class only), is answered from
// the traces alone, with exact percentiles.

// span is a part of a range answered by rollup rows of one grain, or (grain 0) by traces.
type span struct {
	grain    time.Duration
	from, to time.Time
}

// plan cuts [from, to) into spans: the longest usable grain where it covers whole
// buckets, the next grains around it, traces at the ends.
func plan(from, to time.Time, grains []time.Duration) []span {
	if !from.Before(to) {
		return nil
	}
	if len(grains) == 0 {
		return []span{{0, from, to}}
	}
	g := grains[0]
	a, b := ceilTo(from, g), floorTo(to, g)
	if !a.Before(b) {
		return plan(from, to, grains[1:])
	}
	out := plan(from, a, grains[1:])
	out = append(out, span{g, a, b})
	return append(out, plan(b, to, grains[1:])...)
}

func floorTo(t time.Time, g time.Duration) time.Time {
	us, gus := t.UnixMicro(), g.Microseconds()
	r := us % gus
	if r < 0 {
		r += gus
	}
	return time.UnixMicro(us - r).UTC()
}

func ceilTo(t time.Time, g time.Duration) time.Time {
	f := floorTo(t, g)
	if f.Before(t) {
		return f.Add(g)
	}
	return f
}

// rollupGrains are all the grains, longest first.
func rollupGrains() []time.Duration { return rollup.Grains[:] }

// oneBucket reports whether mq's range is one bucket (Bucket 0: always).
func oneBucket(mq MetricsQuery) bool {
	return mq.Bucket <= 0 || !mq.Origin.Add(mq.Bucket).Before(mq.To)
}

// usableGrains are the grains whose rows each fall in one bucket of mq: all of them when
// the range is one bucket, else those dividing the bucket length and its origin.
func usableGrains(mq MetricsQuery) []time.Duration {
	var out []time.Duration
	oneBucket := oneBucket(mq)
	for _, g := range rollup.Grains {
		if oneBucket || (mq.Bucket%g == 0 && floorTo(mq.Origin, g).Equal(mq.Origin)) {
			out = append(out, g)
		}
	}
	return out
}

// span adds the condition selecting the span's rows: rollup rows by grain and
// bucket_start, or traces by created_at. Each span is its own query: the databases serve
// one range from an index, but not an OR of ranges.
func (q *stmt) span(sp span) {
	if sp.grain != 0 {
		q.sql(" AND grain_s = ", strconv.FormatInt(int64(sp.grain/time.Second), 10), " AND bucket_start >= ", q.at(sp.from),
			" AND bucket_start < ", q.at(sp.to))
	} else {
		q.sql(" AND created_at >= ", q.at(sp.from), " AND created_at < ", q.at(sp.to))
	}
}

// acc is one bucket's aggregate while rows are merged.
type acc struct {
	Bucket
	latency, ttfb, overhead rollup.Hist
}

// metricsFromRollups answers mq from the rollups, or returns ok false when it cannot.
func (s *sqlStore) metricsFromRollups(ctx context.Context, tenantID string, mq MetricsQuery, groupAll bool) (map[bucketKey]*acc, bool, error) {
	grains := usableGrains(mq)
	if len(grains) == 0 || grains[len(grains)-1] != time.Minute || mq.GroupBy == FieldStatus {
		return nil, false, nil
	}
	var (
		byKey map[bucketKey]*acc
		ok    bool
	)
	err := s.snapshot(ctx, func(s *sqlStore) error {
		var err error
		byKey, ok, err = s.metricsFromRollupsAt(ctx, tenantID, mq, grains, groupAll)
		return err
	})
	return byKey, ok, err
}

// metricsFromRollupsAt is metricsFromRollups on a store reading one snapshot.
func (s *sqlStore) metricsFromRollupsAt(ctx context.Context, tenantID string, mq MetricsQuery, grains []time.Duration,
	groupAll bool) (map[bucketKey]*acc, bool, error) {
	spans := plan(mq.From, mq.To, grains)
	byKey := map[bucketKey]*acc{}
	add := func(k bucketKey) *acc {
		a := byKey[k]
		if a == nil {
			a = &acc{Bucket: Bucket{Start: time.UnixMicro(k.start).UTC(), Group: k.group, Other: k.other}}
			byKey[k] = a
		}
		return a
	}
	get := func(r rows, dest ...any) (*acc, error) {
		k, err := s.scanBucket(r, dest...)
		if err != nil {
			return nil, err
		}
		return add(k), nil
	}
	group := func(q *stmt) string {
		if groupAll {
			col, _ := fieldColumn(mq.GroupBy)
			return col
		}
		return q.group(mq)
	}
	rolled := false // whether any rollup row was read
	for _, sp := range spans {
		g := get
		if sp.grain != 0 {
			g = func(r rows, dest ...any) (*acc, error) { rolled = true; return get(r, dest...) }
		}
		if err := s.spanMetrics(ctx, tenantID, mq, sp, g, group); err != nil {
			return nil, false, err
		}
	}
	// The deltas not yet folded, over the spans the rollups answer.
	err := s.deltas(ctx, tenantID, spans, func(r *rollup.Row) {
		rolled = true
		a := add(deltaBucket(r, mq, groupAll))
		x := countsSums(&r.Counts)
		if r.StatusClass >= 4 {
			x.Errors = r.Requests
		}
		a.Sums.add(x)
		a.latency.Merge(r.Latency)
		a.ttfb.Merge(r.TTFB)
		a.overhead.Merge(r.Overhead)
	})
	if err != nil {
		return nil, false, fmt.Errorf("analytics: metrics from rollup deltas: %w", err)
	}
	if !rolled {
		// No rollup row where traces exist: the sink does not run the rollup step (or
		// they were never rebuilt), so the traces answer, slower but right.
		if missing, err := s.unrolled(ctx, tenantID, spans); err != nil || missing {
			return nil, false, err
		}
	}
	for _, a := range byKey {
		a.Sums.LatencyP95US = quantile(a.latency, 0.95)
		a.Sums.TTFBP95US = quantile(a.ttfb, 0.95)
		a.Sums.OverheadP95US = quantile(a.overhead, 0.95)
		a.Sums.Approximate = true
	}
	return byKey, true, nil
}

// deltas calls fn with each minute row of the deltas (rollup.Folder) of the tenant (every
// tenant when tenantID is empty) inside the rollup spans: the minutes from the first
// rollup span's start to the last one's end, which the spans cover without gaps.
func (s *sqlStore) deltas(ctx context.Context, tenantID string, spans []span, fn func(*rollup.Row)) error {
	var (
		lo, hi time.Time
		found  bool
	)
	for _, sp := range spans {
		if sp.grain == 0 {
			continue
		}
		if !found {
			lo, found = sp.from, true
		}
		hi = sp.to
	}
	if !found {
		return nil
	}
	q := s.stmt()
	q.sql("SELECT tenant_id, rows FROM trace_rollup_deltas WHERE last_bucket >= ", q.at(lo), " AND first_bucket < ", q.at(hi))
	if tenantID != "" {
		q.sql(" AND tenant_id = ", q.arg(tenantID))
	}
	return s.each(ctx, q, func(r rows) error {
		var (
			tenant string
			enc    []byte
		)
		if err := r.Scan(&tenant, &enc); err != nil {
			return err
		}
		return rollup.DecodeDelta(tenant, enc, func(row *rollup.Row) error {
			if !row.Start.Before(lo) && row.Start.Before(hi) {
				fn(row)
			}
			return nil
		})
	})
}

// deltaBucket is the bucket a delta's minute row counts in: bucketOf and group of stmt,
// in Go.
func deltaBucket(r *rollup.Row, mq MetricsQuery, groupAll bool) bucketKey {
	k := bucketKey{start: mq.Origin.UnixMicro()}
	if !oneBucket(mq) {
		b := mq.Bucket.Microseconds()
		k.start += (r.Start.UnixMicro() - k.start) / b * b // r.Start ≥ mq.From ≥ mq.Origin
	}
	var v string
	switch mq.GroupBy {
	case FieldModel:
		v = r.Model
	case FieldProvider:
		v = r.Provider
	case FieldAPIKey:
		v = r.APIKeyID
	default:
		return k // no group: ''
	}
	if groupAll || slices.Contains(mq.Keep, v) {
		k.group = v
	} else {
		k.other = true
	}
	return k
}

// unrolled reports whether the tenant has traces in a span that rollup rows should cover.
func (s *sqlStore) unrolled(ctx context.Context, tenantID string, spans []span) (bool, error) {
	for _, sp := range spans {
		if sp.grain == 0 {
			continue
		}
		q := s.stmt()
		q.sql("SELECT 1 FROM traces WHERE tenant_id = ", q.arg(tenantID), " AND created_at >= ", q.at(sp.from),
			" AND created_at < ", q.at(sp.to), " LIMIT 1")
		found := false
		if err := s.each(ctx, q, func(rows) error { found = true; return nil }); err != nil {
			return false, fmt.Errorf("analytics: traces without rollups: %w", err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// spanMetrics adds one span's rows to the buckets get returns.
func (s *sqlStore) spanMetrics(ctx context.Context, tenantID string, mq MetricsQuery, sp span,
	get func(r rows, dest ...any) (*acc, error), group func(q *stmt) string) error {
	if sp.grain != 0 {
		// Without group_by, the totals per tenant and status class serve.
		table := "trace_rollups"
		if mq.GroupBy == "" {
			table = "trace_rollup_totals"
		}
		q := s.stmt()
		sum := s.sum
		// Histograms merge by concatenation (see rollup.Hist.AppendBinary). SQLite's
		// group_concat keeps a blob's bytes, NULs included, but returns text.
		hist := func(col string) string {
			if s.pg {
				return "string_agg(" + col + ", ''::bytea)"
			}
			return "CAST(group_concat(" + col + ", '') AS BLOB)"
		}
		q.sql("SELECT ", q.bucketOf("bucket_start", mq), ", ", group(q), ", ", sum("requests"), ", ",
			sum("CASE WHEN status_class >= 4 THEN requests ELSE 0 END"), ", ", sum("prompt_tokens"), ", ",
			sum("completion_tokens"), ", ", sum("cached_tokens"), ", ", sum("reasoning_tokens"), ", ", sum("cost_micro_usd"), ", ",
			sum("unpriced"), ", ", sum("latency_us"), ", ", sum("ttfb_us"), ", ", sum("ttfb_count"), ", ", sum("overhead_us"), ", ",
			hist("latency_hist"), ", ", hist("ttfb_hist"), ", ", hist("overhead_hist"),
			" FROM ", table, " WHERE tenant_id = ", q.arg(tenantID))
		q.span(sp)
		q.sql(" GROUP BY 1, 2")
		err := s.each(ctx, q, func(r rows) error {
			var (
				x       Sums
				l, t, o []byte
			)
			a, err := get(r, &x.Requests, &x.Errors, &x.PromptTokens, &x.CompletionTokens, &x.CachedTokens, &x.ReasoningTokens,
				&x.CostMicroUSD, &x.Unpriced, &x.LatencyUS, &x.TTFBUS, &x.TTFBCount, &x.OverheadUS, &l, &t, &o)
			if err != nil {
				return err
			}
			a.Sums.add(x)
			return joinErr(a.latency.Decode(l), a.ttfb.Decode(t), a.overhead.Decode(o))
		})
		if err != nil {
			return fmt.Errorf("analytics: metrics from rollups: %w", err)
		}
		return nil
	}
	q := s.stmt()
	q.sql("SELECT ", q.bucketOf("created_at", mq), ", ", group(q), ", status, prompt_tokens, completion_tokens, ",
		"cached_tokens, reasoning_tokens, cost_micro_usd, latency_us, ttfb_us, overhead_us FROM traces WHERE tenant_id = ",
		q.arg(tenantID))
	q.span(sp)
	err := s.each(ctx, q, func(r rows) error {
		var (
			status                     int
			c                          rollup.Counts
			p, cp, ca, re, lat, tt, ov int64
			cost                       *int64
		)
		a, err := get(r, &status, &p, &cp, &ca, &re, &cost, &lat, &tt, &ov)
		if err != nil {
			return err
		}
		c.AddTrace(p, cp, ca, re, cost, lat, tt, ov)
		x := countsSums(&c)
		if status >= 400 {
			x.Errors = 1
		}
		a.Sums.add(x)
		a.latency.Merge(c.Latency)
		a.ttfb.Merge(c.TTFB)
		a.overhead.Merge(c.Overhead)
		return nil
	})
	if err != nil {
		return fmt.Errorf("analytics: metrics from traces: %w", err)
	}
	return nil
}

func quantile(h rollup.Hist, q float64) *int64 {
	v, ok := h.Quantile(q)
	if !ok {
		return nil
	}
	return &v
}

func joinErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// countsSums are the additive sums of c.
func countsSums(c *rollup.Counts) Sums {
	return Sums{Requests: c.Requests, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens,
		CachedTokens: c.CachedTokens, ReasoningTokens: c.ReasoningTokens, CostMicroUSD: c.CostMicroUSD, Unpriced: c.Unpriced,
		LatencyUS: c.LatencyUS, TTFBUS: c.TTFBUS, TTFBCount: c.TTFBCount, OverheadUS: c.OverheadUS}
}

// add adds the additive sums of x to s.
func (s *Sums) add(x Sums) {
	s.Requests += x.Requests
	s.Errors += x.Errors
	s.PromptTokens += x.PromptTokens
	s.CompletionTokens += x.CompletionTokens
	s.CachedTokens += x.CachedTokens
	s.ReasoningTokens += x.ReasoningTokens
	s.CostMicroUSD += x.CostMicroUSD
	s.Unpriced += x.Unpriced
	s.LatencyUS += x.LatencyUS
	s.TTFBUS += x.TTFBUS
	s.TTFBCount += x.TTFBCount
	s.OverheadUS += x.OverheadUS
}

// bucketOf is the expression of the start of the bucket of a row whose time is col.
func (q *stmt) bucketOf(col string, mq MetricsQuery) string {
	if oneBucket(mq) {
		return q.at(mq.Origin)
	}
	if q.pg {
		return "date_bin(" + q.arg(mq.Bucket) + "::interval, " + col + ", " + q.at(mq.Origin) + ")"
	}
	return "(" + col + " - ((" + col + " - " + q.at(mq.Origin) + ") % " + q.arg(mq.Bucket.Microseconds()) + "))"
}

// The whole of time, for an unbounded range.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// valuesFromRollups is Values from the rollups, or ok false for a field they lack.
func (s *sqlStore) valuesFromRollups(ctx context.Context, tenantID string, field Field, from, to time.Time) ([]Value, bool, error) {
	if field == FieldStatus {
		return nil, false, nil
	}
	if from.IsZero() {
		from = minTime
	}
	if to.IsZero() {
		to = maxTime
	}
	byKey, ok, err := s.metricsFromRollups(ctx, tenantID, MetricsQuery{From: from, To: to, Origin: from, GroupBy: field}, true)
	if err != nil || !ok {
		return nil, ok, err
	}
	out := make([]Value, 0, len(byKey))
	for k, a := range byKey {
		out = append(out, Value{Value: k.group, Requests: a.Sums.Requests})
	}
	return out, true, nil
}
