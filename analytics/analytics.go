package analytics

import (
	"context"
	"errors"
	"time"
)

// Store answers the analytics queries for one tenant at a time. Every method is bound to
// tenantID: no result ever includes another tenant's traces. Implementations must be safe
// for concurrent use.
type Store interface {
	// List returns up to limit traces matching f, newest first (by created_at, then id),
	// strictly after the position after (nil: from the newest).
	List(ctx context.Context, tenantID string, f Filter, after *Cursor, limit int) ([]Trace, error)
	// Get returns one trace with its sealed bodies, or ErrNotFound when the tenant has no
	// trace with that id (whether or not another tenant has).
	Get(ctx context.Context, tenantID, id string) (*Sealed, error)
	// Metrics aggregates the traces created in q's range, per bucket and group (see
	// MetricsQuery). Buckets and groups without traces are absent.
	Metrics(ctx context.Context, tenantID string, q MetricsQuery) ([]Bucket, error)
	// Values returns the distinct values of field among the traces created in [from, to)
	// (zero times: unbounded), most requests first, then by value, at most limit.
	Values(ctx context.Context, tenantID string, field Field, from, to time.Time, limit int) ([]Value, error)
	// Export calls fn with every trace matching f, newest first, reading them from the
	// database as fn consumes them (never the whole set in memory). It stops at fn's first
	// error and returns it.
	Export(ctx context.Context, tenantID string, f Filter, fn func(*Trace) error) error
	// Usage calls fn with the reconciliation rows of the traces created in [from, to), by
	// UTC day, provider, model and API key, in that order.
	Usage(ctx context.Context, tenantID string, from, to time.Time, fn func(UsageRow) error) error
}

// Trace is one trace as the API lists it: every field of the audit record but the bodies.
type Trace struct {
	ID                string    `json:"id"`
	CreatedAt         time.Time `json:"created_at"`
	TenantID          string    `json:"tenant_id"`
	APIKeyID          string    `json:"api_key_id"`
	RequestID         string    `json:"request_id"`
	Model             string    `json:"model"`
	ServedModel       string    `json:"served_model"`
	Provider          string    `json:"provider"`
	Stream            bool      `json:"stream"`
	Status            int       `json:"status"`
	ErrorType         string    `json:"error_type"`
	ClientAborted     bool      `json:"client_aborted"`
	PromptTokens      int64     `json:"prompt_tokens"`
	CompletionTokens  int64     `json:"completion_tokens"`
	CachedTokens      int64     `json:"cached_tokens"`
	ReasoningTokens   int64     `json:"reasoning_tokens"`
	UsageSource       string    `json:"usage_source"`
	CostMicroUSD      *int64    `json:"cost_micro_usd"` // null: the cost is unknown
	PriceVersion      string    `json:"price_version"`
	LatencyUS         int64     `json:"latency_us"`
	TTFBUS            int64     `json:"ttfb_us"`
	OverheadUS        int64     `json:"overhead_us"`
	ResponseTruncated bool      `json:"response_truncated"`
	FieldsCut         bool      `json:"fields_cut"`
	UpstreamRetries   int       `json:"upstream_retries"`
	KeyVersion        int       `json:"key_version"`
	// The usage in full (see tracing.Trace).
	UsageMethod              string `json:"usage_method"`
	CacheWrite5mTokens       int64  `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens       int64  `json:"cache_write_1h_tokens"`
	AudioPromptTokens        int64  `json:"audio_prompt_tokens"`
	AudioCompletionTokens    int64  `json:"audio_completion_tokens"`
	AcceptedPredictionTokens int64  `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int64  `json:"rejected_prediction_tokens"`
	ServiceTier              string `json:"service_tier"`
	// FinishReasons are why the upstream stopped generating, each reason once in choice
	// order (see tracing.Trace); empty, never null, when no choice finished.
	FinishReasons []string `json:"finish_reasons"`
}

// Sealed is one trace with its bodies as stored: ciphertext, nil when there was no body.
type Sealed struct {
	Trace
	SealedRequest  []byte
	SealedResponse []byte
}

// Filter selects traces. Zero fields select everything.
type Filter struct {
	Model    string
	Provider string
	APIKeyID string
	Status   StatusFilter
	Stream   *bool
	From, To time.Time // created_at in [From, To); zero: unbounded
}

// StatusFilter selects traces by HTTP status: a class or one code.
type StatusFilter struct {
	Class string // "ok" (status < 400), "error" (status ≥ 400), or "" (see Code)
	Code  int    // one exact status, when Class is ""; 0: any
}

// Field is a trace column a filter can take values of.
type Field string

// The fields Values and the group_by of time series accept.
const (
	FieldModel    Field = "model"
	FieldProvider Field = "provider"
	FieldAPIKey   Field = "api_key_id"
	FieldStatus   Field = "status"
)

// Value is one distinct value of a field and how many traces have it.
type Value struct {
	Value    string `json:"value"`
	Requests int64  `json:"requests"`
}

// MetricsQuery asks for metrics over the traces created in [From, To), cut into buckets of
// Bucket length aligned to Origin (each trace counts in the bucket starting at
// Origin + k·Bucket that holds it). GroupBy, when set, splits each bucket by that field:
// the values in Keep each get their own group, every other value falls into one group
// with Other set.
type MetricsQuery struct {
	From, To time.Time
	Origin   time.Time
	Bucket   time.Duration
	GroupBy  Field
	Keep     []string
}

// Bucket is the aggregate of one bucket (and group, if grouped).
type Bucket struct {
	Start time.Time
	Group string // the GroupBy value; "" when not grouped or Other
	Other bool   // the group of every value not in MetricsQuery.Keep
	Sums  Sums
}

// Sums are the exact aggregates of a set of traces, from which Metrics are derived. They
// are additive except the percentiles.
type Sums struct {
	Requests         int64
	Errors           int64 // status ≥ 400
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
	ReasoningTokens  int64
	CostMicroUSD     int64 // over the priced traces only
	Unpriced         int64 // traces whose cost is unknown (no price for the model, or no usage)
	LatencyUS        int64
	TTFBUS           int64 // over the traces that received a first byte (ttfb_us > 0)
	TTFBCount        int64
	OverheadUS       int64
	// LatencyP95US, TTFBP95US and OverheadP95US are the 95th percentiles (the smallest
	// value at or above which 95 % of the values lie: percentile_disc), nil without values.
	LatencyP95US  *int64
	TTFBP95US     *int64
	OverheadP95US *int64
	// Approximate is set when the percentiles come from the rollups' histograms: within
	// rollup.RelativeError (4.33 %, plus a microsecond of rounding) of the exact value.
	Approximate bool
}

// Metrics are the figures the API reports for a set of traces. Averages, rates and
// percentiles are null when there is nothing to average.
type Metrics struct {
	Requests         int64    `json:"requests"`
	Errors           int64    `json:"errors"`
	ErrorRate        *float64 `json:"error_rate"` // errors / requests
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	CachedTokens     int64    `json:"cached_tokens"`
	ReasoningTokens  int64    `json:"reasoning_tokens"`
	CostMicroUSD     int64    `json:"cost_micro_usd"`    // priced requests only
	UnpricedRequests int64    `json:"unpriced_requests"` // requests whose cost is unknown
	LatencyAvgUS     *float64 `json:"latency_avg_us"`
	LatencyP95US     *int64   `json:"latency_p95_us"`
	TTFBAvgUS        *float64 `json:"ttfb_avg_us"` // over requests that received a first byte
	TTFBP95US        *int64   `json:"ttfb_p95_us"`
	OverheadAvgUS    *float64 `json:"overhead_avg_us"`
	OverheadP95US    *int64   `json:"overhead_p95_us"`
	// PercentilesApproximate is set when the percentiles are estimates, within 4.33 % (plus
	// a microsecond) of the exact values: those answered from the rollups.
	PercentilesApproximate bool `json:"percentiles_approximate"`
}

// Metrics derives the reported figures.
func (s Sums) Metrics() Metrics {
	m := Metrics{
		Requests: s.Requests, Errors: s.Errors,
		PromptTokens: s.PromptTokens, CompletionTokens: s.CompletionTokens,
		CachedTokens: s.CachedTokens, ReasoningTokens: s.ReasoningTokens,
		CostMicroUSD: s.CostMicroUSD, UnpricedRequests: s.Unpriced,
		LatencyP95US: s.LatencyP95US, TTFBP95US: s.TTFBP95US, OverheadP95US: s.OverheadP95US,
		PercentilesApproximate: s.Approximate && s.LatencyP95US != nil,
	}
	m.ErrorRate = ratio(s.Errors, s.Requests)
	m.LatencyAvgUS = ratio(s.LatencyUS, s.Requests)
	m.TTFBAvgUS = ratio(s.TTFBUS, s.TTFBCount)
	m.OverheadAvgUS = ratio(s.OverheadUS, s.Requests)
	return m
}

func ratio(a, b int64) *float64 {
	if b == 0 {
		return nil
	}
	r := float64(a) / float64(b)
	return &r
}

// ErrNotFound: the tenant has no trace with the id asked for.
var ErrNotFound = errors.New("analytics: trace not found")

// ParamError is a bad query parameter; the client gets a 400 naming Param.
type ParamError struct {
	Param   string
	Message string
}

func (e *ParamError) Error() string { return "analytics: " + e.Param + ": " + e.Message }
