package analytics

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// sqlStore is the Store both databases share: the same traces columns and the same SQL,
// but for placeholders, the type of created_at (timestamptz in PostgreSQL, unix
// microseconds in SQLite), time buckets and percentiles.
type sqlStore struct {
	pg bool
	// query runs a query; done releases its rows.
	query func(ctx context.Context, sql string, args ...any) (r rows, done func(), err error)
	// snapshot runs fn with a store whose queries all read one snapshot of the database
	// (a read-only transaction): the rollups and their deltas read by several statements
	// are then never seen half folded.
	snapshot func(ctx context.Context, fn func(*sqlStore) error) error
}

// rows is what both drivers' result sets offer (pgx.Rows, *sql.Rows).
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// stmt builds one statement and its arguments.
type stmt struct {
	pg   bool
	b    strings.Builder
	args []any
}

func (s *sqlStore) stmt() *stmt { return &stmt{pg: s.pg} }

func (q *stmt) sql(parts ...string) {
	for _, p := range parts {
		q.b.WriteString(p)
	}
}

// arg adds an argument and returns its placeholder.
func (q *stmt) arg(v any) string {
	q.args = append(q.args, v)
	if q.pg {
		return "$" + strconv.Itoa(len(q.args))
	}
	return "?"
}

// at adds a time argument in the column's representation.
func (q *stmt) at(t time.Time) string {
	if q.pg {
		return q.arg(t.UTC()) + "::timestamptz"
	}
	return q.arg(t.UnixMicro())
}

// id adds a trace id argument.
func (q *stmt) id(id string) string {
	if q.pg {
		return q.arg(id) + "::uuid"
	}
	return q.arg(id)
}

// where adds the tenant and the filter's conditions.
func (q *stmt) where(tenantID string, f Filter) {
	q.sql(" WHERE tenant_id = ", q.arg(tenantID))
	for _, c := range [...]struct{ col, v string }{{"model", f.Model}, {"provider", f.Provider}, {"api_key_id", f.APIKeyID}} {
		if c.v != "" {
			q.sql(" AND ", c.col, " = ", q.arg(c.v))
		}
	}
	switch {
	case f.Status.Class == "ok":
		q.sql(" AND status < 400")
	case f.Status.Class == "error":
		q.sql(" AND status >= 400")
	case f.Status.Code != 0:
		q.sql(" AND status = ", q.arg(f.Status.Code))
	}
	if f.Stream != nil {
		q.sql(" AND stream = ", q.arg(*f.Stream))
	}
	if !f.From.IsZero() {
		q.sql(" AND created_at >= ", q.at(f.From))
	}
	if !f.To.IsZero() {
		q.sql(" AND created_at < ", q.at(f.To))
	}
}

// traceColumns are the columns of a Trace, in scanTrace's order.
const traceColumns = "id, created_at, tenant_id, api_key_id, request_id, model, served_model, provider, stream, status, " +
	"error_type, client_aborted, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_source, " +
	"cost_micro_usd, price_version, latency_us, ttfb_us, overhead_us, response_truncated, key_version, fields_cut, upstream_retries, " +
	"usage_method, cache_write_5m_tokens, cache_write_1h_tokens, audio_prompt_tokens, audio_completion_tokens, " +
	"accepted_prediction_tokens, rejected_prediction_tokens, service_tier, finish_reasons"

// scanTrace scans a row of traceColumns (then extra) into t.
func (s *sqlStore) scanTrace(r rows, t *Trace, extra ...any) error {
	var (
		at time.Time
		us int64
	)
	var finishJSON string
	var created, finish any = &us, &finishJSON
	if s.pg {
		created, finish = &at, &t.FinishReasons
	}
	dest := append([]any{&t.ID, created, &t.TenantID, &t.APIKeyID, &t.RequestID, &t.Model, &t.ServedModel,
		&t.Provider, &t.Stream, &t.Status, &t.ErrorType, &t.ClientAborted, &t.PromptTokens, &t.CompletionTokens,
		&t.CachedTokens, &t.ReasoningTokens, &t.UsageSource, &t.CostMicroUSD, &t.PriceVersion, &t.LatencyUS,
		&t.TTFBUS, &t.OverheadUS, &t.ResponseTruncated, &t.KeyVersion, &t.FieldsCut, &t.UpstreamRetries,
		&t.UsageMethod, &t.CacheWrite5mTokens, &t.CacheWrite1hTokens, &t.AudioPromptTokens, &t.AudioCompletionTokens,
		&t.AcceptedPredictionTokens, &t.RejectedPredictionTokens, &t.ServiceTier, finish}, extra...)
	if err := r.Scan(dest...); err != nil {
		return err
	}
	if s.pg {
		t.CreatedAt = at.UTC()
	} else {
		t.CreatedAt = time.UnixMicro(us).UTC()
		// A JSON array in SQLite (migrations/sqlite 00008).
		if err := json.Unmarshal([]byte(finishJSON), &t.FinishReasons); err != nil {
			return fmt.Errorf("finish_reasons: %w", err)
		}
	}
	if t.FinishReasons == nil {
		t.FinishReasons = []string{} // listed as [], never null
	}
	return nil
}

// each runs q and calls fn for each row.
func (s *sqlStore) each(ctx context.Context, q *stmt, fn func(rows) error) error {
	r, done, err := s.query(ctx, q.b.String(), q.args...)
	if err != nil {
		return err
	}
	defer done()
	for r.Next() {
		if err := fn(r); err != nil {
			return err
		}
	}
	return r.Err()
}

func (s *sqlStore) List(ctx context.Context, tenantID string, f Filter, after *Cursor, limit int) ([]Trace, error) {
	q := s.stmt()
	q.sql("SELECT ", traceColumns, " FROM traces")
	q.where(tenantID, f)
	if after != nil {
		q.sql(" AND (created_at, id) < (", q.at(after.CreatedAt), ", ", q.id(after.ID), ")")
	}
	q.sql(" ORDER BY created_at DESC, id DESC LIMIT ", q.arg(limit))
	out := make([]Trace, 0, limit)
	err := s.each(ctx, q, func(r rows) error {
		out = append(out, Trace{})
		return s.scanTrace(r, &out[len(out)-1])
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: list traces: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Get(ctx context.Context, tenantID, id string) (*Sealed, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, ErrNotFound // no trace has an id that is not a UUID
	}
	q := s.stmt()
	q.sql("SELECT ", traceColumns, ", request_sealed, response_sealed FROM traces WHERE tenant_id = ", q.arg(tenantID),
		" AND id = ", q.id(u.String()))
	var found *Sealed
	err = s.each(ctx, q, func(r rows) error {
		found = &Sealed{}
		return s.scanTrace(r, &found.Trace, &found.SealedRequest, &found.SealedResponse)
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: get trace: %w", err)
	}
	if found == nil {
		return nil, ErrNotFound
	}
	return found, nil
}

func (s *sqlStore) Export(ctx context.Context, tenantID string, f Filter, fn func(*Trace) error) error {
	q := s.stmt()
	q.sql("SELECT ", traceColumns, " FROM traces")
	q.where(tenantID, f)
	q.sql(" ORDER BY created_at DESC, id DESC")
	var t Trace
	return s.each(ctx, q, func(r rows) error {
		if err := s.scanTrace(r, &t); err != nil {
			return fmt.Errorf("analytics: export: %w", err)
		}
		return fn(&t)
	})
}

// fieldColumn is the SQL expression of a field, as text.
func fieldColumn(f Field) (string, bool) {
	switch f {
	case FieldModel, FieldProvider, FieldAPIKey:
		return string(f), true
	case FieldStatus:
		return "CAST(status AS TEXT)", true
	}
	return "", false
}

func (s *sqlStore) Values(ctx context.Context, tenantID string, field Field, from, to time.Time, limit int) ([]Value, error) {
	col, ok := fieldColumn(field)
	if !ok {
		return nil, fmt.Errorf("analytics: values: unknown field %q", field)
	}
	vals, ok, err := s.valuesFromRollups(ctx, tenantID, field, from, to)
	if err != nil {
		return nil, fmt.Errorf("analytics: values of %s: %w", field, err)
	}
	if ok {
		slices.SortFunc(vals, func(a, b Value) int {
			if a.Requests != b.Requests {
				return cmp.Compare(b.Requests, a.Requests)
			}
			return strings.Compare(a.Value, b.Value)
		})
		return vals[:min(len(vals), limit)], nil
	}
	q := s.stmt()
	q.sql("SELECT ", col, ", count(*) FROM traces")
	q.where(tenantID, Filter{From: from, To: to})
	q.sql(" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ", q.arg(limit))
	out := []Value{}
	err = s.each(ctx, q, func(r rows) error {
		var v Value
		err := r.Scan(&v.Value, &v.Requests)
		out = append(out, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: values of %s: %w", field, err)
	}
	return out, nil
}

// bucketKey identifies a bucket and group while results are merged.
type bucketKey struct {
	start int64 // unix microseconds
	group string
	other bool
}

func (s *sqlStore) Metrics(ctx context.Context, tenantID string, mq MetricsQuery) ([]Bucket, error) {
	if mq.Bucket <= 0 || mq.Origin.After(mq.From) {
		return nil, fmt.Errorf("analytics: metrics: bucket %v from origin %v does not cover %v", mq.Bucket, mq.Origin, mq.From)
	}
	accs, ok, err := s.metricsFromRollups(ctx, tenantID, mq, false)
	if err != nil {
		return nil, err
	}
	if !ok {
		return s.metricsFromTraces(ctx, tenantID, mq)
	}
	out := make([]Bucket, 0, len(accs))
	for _, a := range accs {
		out = append(out, a.Bucket)
	}
	sortBuckets(out)
	return out, nil
}

// scanBucket scans a row that starts with its bucket start and group (NULL: "other"),
// then dest.
func (s *sqlStore) scanBucket(r rows, dest ...any) (bucketKey, error) {
	var (
		at    time.Time
		us    int64
		group *string
	)
	var start any = &us
	if s.pg {
		start = &at
	}
	if err := r.Scan(append([]any{start, &group}, dest...)...); err != nil {
		return bucketKey{}, err
	}
	if s.pg {
		us = at.UnixMicro()
	}
	k := bucketKey{start: us, other: group == nil}
	if group != nil {
		k.group = *group
	}
	return k, nil
}

// metricsFromTraces is Metrics from the traces, with exact percentiles.
func (s *sqlStore) metricsFromTraces(ctx context.Context, tenantID string, mq MetricsQuery) ([]Bucket, error) {
	byKey := map[bucketKey]*Bucket{}
	// bucketOf scans a row's bucket and group and returns its Bucket.
	bucketOf := func(r rows, dest ...any) (*Bucket, error) {
		k, err := s.scanBucket(r, dest...)
		if err != nil {
			return nil, err
		}
		b := byKey[k]
		if b == nil {
			b = &Bucket{Start: time.UnixMicro(k.start).UTC(), Group: k.group, Other: k.other}
			byKey[k] = b
		}
		return b, nil
	}

	q := s.stmt()
	q.sql("SELECT ", q.bucket(mq), ", ", q.group(mq), ", count(*), count(*) FILTER (WHERE status >= 400), ",
		s.sum("prompt_tokens"), ", ", s.sum("completion_tokens"), ", ", s.sum("cached_tokens"), ", ", s.sum("reasoning_tokens"), ", ",
		s.sum("cost_micro_usd"), ", count(*) FILTER (WHERE cost_micro_usd IS NULL), ", s.sum("latency_us"), ", ",
		s.sum("ttfb_us"), ", count(*) FILTER (WHERE ttfb_us > 0), ", s.sum("overhead_us"))
	if s.pg {
		q.sql(", percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us)",
			", percentile_disc(0.95) WITHIN GROUP (ORDER BY ttfb_us) FILTER (WHERE ttfb_us > 0)",
			", percentile_disc(0.95) WITHIN GROUP (ORDER BY overhead_us)")
	}
	q.sql(" FROM traces")
	q.where(tenantID, Filter{From: mq.From, To: mq.To})
	q.sql(" GROUP BY 1, 2")
	err := s.each(ctx, q, func(r rows) error {
		var x Sums
		dest := []any{&x.Requests, &x.Errors, &x.PromptTokens, &x.CompletionTokens, &x.CachedTokens, &x.ReasoningTokens,
			&x.CostMicroUSD, &x.Unpriced, &x.LatencyUS, &x.TTFBUS, &x.TTFBCount, &x.OverheadUS}
		if s.pg {
			dest = append(dest, &x.LatencyP95US, &x.TTFBP95US, &x.OverheadP95US)
		}
		b, err := bucketOf(r, dest...)
		if err == nil {
			b.Sums = x
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: metrics: %w", err)
	}
	if !s.pg {
		// SQLite has no percentile aggregate: rank each bucket's values and take the one at
		// position ceil(0.95·n), which is what percentile_disc(0.95) returns.
		for _, p := range [...]struct {
			col, cond string
			set       func(*Sums, int64)
		}{
			{"latency_us", "", func(s *Sums, v int64) { s.LatencyP95US = &v }},
			{"ttfb_us", " AND ttfb_us > 0", func(s *Sums, v int64) { s.TTFBP95US = &v }},
			{"overhead_us", "", func(s *Sums, v int64) { s.OverheadP95US = &v }},
		} {
			q := s.stmt()
			q.sql("SELECT b, g, v FROM (SELECT b, g, v, row_number() OVER (PARTITION BY b, g ORDER BY v) AS rn, ",
				"count(*) OVER (PARTITION BY b, g) AS n FROM (SELECT ", q.bucket(mq), " AS b, ", q.group(mq), " AS g, ",
				p.col, " AS v FROM traces")
			q.where(tenantID, Filter{From: mq.From, To: mq.To})
			q.sql(p.cond, ")) WHERE rn = (n * 95 + 99) / 100")
			err := s.each(ctx, q, func(r rows) error {
				var v int64
				b, err := bucketOf(r, &v)
				if err == nil {
					p.set(&b.Sums, v)
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("analytics: metrics: percentiles: %w", err)
			}
		}
	}
	out := make([]Bucket, 0, len(byKey))
	for _, b := range byKey {
		out = append(out, *b)
	}
	sortBuckets(out)
	return out, nil
}

// sortBuckets orders buckets by start, then group, Other last.
func sortBuckets(out []Bucket) {
	slices.SortFunc(out, func(a, b Bucket) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if a.Other != b.Other {
			if a.Other {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Group, b.Group)
	})
}

// sum is a column's sum as a bigint, 0 over no rows.
func (s *sqlStore) sum(col string) string {
	if s.pg {
		return "coalesce(sum(" + col + "), 0)::bigint"
	}
	return "coalesce(sum(" + col + "), 0)"
}

// bucket is the expression of the start of a row's bucket.
func (q *stmt) bucket(mq MetricsQuery) string {
	if q.pg {
		return "date_bin(" + q.arg(mq.Bucket) + "::interval, created_at, " + q.at(mq.Origin) + ")"
	}
	return "(created_at - ((created_at - " + q.at(mq.Origin) + ") % " + q.arg(mq.Bucket.Microseconds()) + "))"
}

// group is the expression of a row's group: the field's value if kept, NULL for the
// others, the empty string when not grouped.
func (q *stmt) group(mq MetricsQuery) string {
	col, ok := fieldColumn(mq.GroupBy)
	if !ok {
		return "CAST('' AS TEXT)"
	}
	if len(mq.Keep) == 0 {
		return "CAST(NULL AS TEXT)"
	}
	ph := make([]string, len(mq.Keep))
	for i, v := range mq.Keep {
		ph[i] = q.arg(v)
	}
	return "CASE WHEN " + col + " IN (" + strings.Join(ph, ", ") + ") THEN " + col + " END"
}
