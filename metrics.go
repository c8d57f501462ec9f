package loom

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// Label values that stand in for what a label must not take from the client: a model
// that no route serves, or one past the bound on distinct models per provider.
const (
	labelNone    = "none"    // no route was resolved (auth failure, bad request, unknown model)
	labelUnknown = "unknown" // the model of a request no route served
	labelOther   = "other"   // a model past maxModelsPerProvider
)

// maxModelsPerProvider bounds the model label values per provider: a route without a
// Models list passes any "name/…" model upstream, and each distinct name must not become
// a new series for ever.
const maxModelsPerProvider = 200

// latencyBuckets are the classic buckets of every latency histogram, in seconds, fine
// enough at the bottom to tell 50 µs of overhead from 100 µs; native-histogram scrapers
// get exponential buckets as well.
var latencyBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10, 30, 60, 120, 300, 600,
}

// metrics are the gateway's Prometheus collectors. Per-request series are resolved once
// per (route, provider, model, tenant) and cached, so the request path does no label
// lookups after the first request of a kind.
type metrics struct {
	tenantLabel bool

	requests       *prometheus.CounterVec
	inflight       prometheus.Gauge
	streams        prometheus.Gauge
	overhead       *prometheus.HistogramVec
	ttfb           *prometheus.HistogramVec
	upstream       *prometheus.HistogramVec
	tokens         *prometheus.CounterVec
	cost           *prometheus.CounterVec
	upstreamErrors *prometheus.CounterVec
	sinkLatency    *prometheus.HistogramVec
	sinkBatch      *prometheus.HistogramVec

	mu          sync.RWMutex
	series      map[seriesKey]*series
	models      map[[2]string]bool // (provider, model) label pairs in use
	perProvider map[string]int     // distinct model labels per provider
}

type seriesKey struct{ route, provider, model, tenant string }

// series holds the resolved children of one (route, provider, model, tenant).
type series struct {
	requests                              [6]prometheus.Counter // by status class: 1xx … 5xx, [0] for anything else
	overhead                              prometheus.Observer
	ttfb                                  prometheus.Observer
	upstream                              prometheus.Observer
	prompt, completion, cached, reasoning prometheus.Counter
	cost                                  prometheus.Counter
}

func latencyHistogram(name, help string, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "loom", Name: name, Help: help,
		Buckets:                         latencyBuckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}, labels)
}

// newMetrics creates the collectors and registers them into reg, with the counters g
// keeps elsewhere (the trace pipeline's, the Store's, the unpriced requests) read from it
// at each scrape.
func newMetrics(reg prometheus.Registerer, tenantLabel bool, g *Gateway) (*metrics, error) {
	// Label order: route, provider, model, [tenant], then the metric's own.
	pmLabels := []string{"provider", "model"}
	if tenantLabel {
		pmLabels = append(pmLabels, "tenant")
	}
	reqLabels := slices.Concat([]string{"route"}, pmLabels, []string{"status_class"})
	m := &metrics{
		tenantLabel: tenantLabel,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "loom", Name: "requests_total",
			Help: "Requests answered, by route, provider, model and status class."}, reqLabels),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "loom", Name: "requests_in_flight",
			Help: "Chat completion requests being served."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "loom", Name: "streams_in_flight",
			Help: "Streamed answers being relayed."}),
		overhead: latencyHistogram("overhead_seconds", "Loom's own time per request: everything but the wait for the upstream.", pmLabels...),
		ttfb:     latencyHistogram("ttfb_seconds", "Arrival of the request to the first byte (or first event) from the upstream.", pmLabels...),
		upstream: latencyHistogram("upstream_latency_seconds", "The upstream's time: request sent to its last byte.", pmLabels...),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "loom", Name: "tokens_total",
			Help: "Tokens by provider, model and type (prompt, completion, cached, reasoning); cached and reasoning are subsets."},
			slices.Concat(pmLabels, []string{"type"})),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "loom", Name: "cost_usd_total",
			Help: "Cost of the priced requests in US dollars, by provider and model."}, pmLabels),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "loom", Name: "upstream_errors_total",
			Help: "Failed upstream calls by provider and kind (timeout, unreachable, upstream_status, protocol, stream_interrupted)."},
			[]string{"provider", "kind"}),
		sinkLatency: latencyHistogram("trace_sink_write_seconds", "Duration of each trace sink WriteBatch call, by sink and result.", "sink", "result"),
		sinkBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "loom", Name: "trace_sink_batch_size",
			Help: "Traces per WriteBatch call, by sink.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}, []string{"sink"}),
		series:      map[seriesKey]*series{},
		models:      map[[2]string]bool{},
		perProvider: map[string]int{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.inflight, m.streams, m.overhead, m.ttfb, m.upstream,
		m.tokens, m.cost, m.upstreamErrors, m.sinkLatency, m.sinkBatch, pipelineCollector{g.TraceStats}, storeCollector{g.StoreStats}, unpricedCollector{g.UnpricedRequests}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// get returns the series of one kind of request, creating it on first use. The model
// label is bounded: past maxModelsPerProvider distinct models, a provider's new ones
// share the label "other" (and are not cached under their own name).
func (m *metrics) get(route, prov, model, tenant string) *series {
	if !m.tenantLabel {
		tenant = ""
	}
	model = labelSafe(model)
	k := seriesKey{route, prov, model, tenant}
	m.mu.RLock()
	s := m.series[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.series[k]; s != nil {
		return s
	}
	if pm := [2]string{prov, model}; !m.models[pm] {
		if m.perProvider[prov] >= maxModelsPerProvider {
			k.model = labelOther
			if s = m.series[k]; s != nil {
				return s
			}
		} else {
			m.models[pm] = true
			m.perProvider[prov]++
		}
	}
	// labels returns fresh label values (a Vec may keep the slice it is given).
	labels := func(first []string, last ...string) []string {
		l := append(slices.Clone(first), k.provider, k.model)
		if m.tenantLabel {
			l = append(l, k.tenant)
		}
		return append(l, last...)
	}
	s = &series{
		overhead:   m.overhead.WithLabelValues(labels(nil)...),
		ttfb:       m.ttfb.WithLabelValues(labels(nil)...),
		upstream:   m.upstream.WithLabelValues(labels(nil)...),
		prompt:     m.tokens.WithLabelValues(labels(nil, "prompt")...),
		completion: m.tokens.WithLabelValues(labels(nil, "completion")...),
		cached:     m.tokens.WithLabelValues(labels(nil, "cached")...),
		reasoning:  m.tokens.WithLabelValues(labels(nil, "reasoning")...),
		cost:       m.cost.WithLabelValues(labels(nil)...),
	}
	for i, c := range [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		s.requests[i] = m.requests.WithLabelValues(labels([]string{k.route}, c)...)
	}
	m.series[k] = s
	return s
}

// maxLabelBytes bounds a model label value, as tracing.MaxModelBytes bounds the trace's.
const maxLabelBytes = 256

// labelSafe returns model as a valid label value: Prometheus refuses invalid UTF-8 (a
// client may send any bytes as the model), and a huge value would bloat every scrape.
func labelSafe(model string) string {
	if len(model) <= maxLabelBytes && utf8.ValidString(model) {
		return model
	}
	model = strings.ToValidUTF8(model, "\uFFFD")
	if len(model) > maxLabelBytes {
		i := maxLabelBytes
		for i > 0 && !utf8.RuneStart(model[i]) {
			i--
		}
		model = model[:i]
	}
	return model
}

func statusClass(status int) int {
	if c := status / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}

// observeChat records one finished chat completion from its exchange.
func (m *metrics) observeChat(x *exchange) {
	t := x.t
	prov, model := t.Provider, t.Model
	if prov == "" {
		prov, model = labelNone, labelUnknown
	}
	s := m.get("chat_completions", prov, model, t.TenantID)
	s.requests[statusClass(t.Status)].Inc()
	s.overhead.Observe(float64(t.OverheadUS) / 1e6)
	if t.TTFBUS > 0 {
		s.ttfb.Observe(float64(t.TTFBUS) / 1e6)
	}
	if !x.sent.IsZero() {
		s.upstream.Observe(x.last.Sub(x.sent).Seconds())
	}
	if t.UsageSource != tracing.UsageMissing {
		s.prompt.Add(float64(t.PromptTokens))
		s.completion.Add(float64(t.CompletionTokens))
		s.cached.Add(float64(t.CachedTokens))
		s.reasoning.Add(float64(t.ReasoningTokens))
	}
	if x.upstreamErr != "" {
		m.upstreamErrors.WithLabelValues(prov, x.upstreamErr).Inc()
	}
}

// observeUnrouted counts a request that reached no provider and has no trace (a refused
// key, or a request to list models).
func (m *metrics) observeUnrouted(route string, status int) {
	m.get(route, labelNone, labelUnknown, "").requests[statusClass(status)].Inc()
}

// observeCost adds a priced trace's cost. It runs off the request path, where the trace
// is priced.
func (m *metrics) observeCost(t *tracing.Trace) {
	if t.CostMicroUSD == nil {
		return
	}
	prov, model := t.Provider, t.Model
	if prov == "" {
		prov, model = labelNone, labelUnknown
	}
	m.get("chat_completions", prov, model, t.TenantID).cost.Add(float64(*t.CostMicroUSD) / 1e6)
}

// upstreamErrorKind sorts a failed upstream call for loom_upstream_errors_total; "" when
// err is not the upstream's failure (a bad request, the client leaving).
func upstreamErrorKind(err error) string {
	var ue *provider.UpstreamError
	switch {
	case errors.Is(err, errUpstreamTimeout):
		return "timeout"
	case errors.Is(err, errUnreachable):
		return "unreachable"
	case errors.As(err, &ue):
		return "upstream_status"
	case errors.Is(err, errUpstreamProtocol):
		return "protocol"
	case errors.Is(err, errStreamInterrupted):
		return "stream_interrupted"
	}
	return ""
}

// timedSink measures a sink's WriteBatch calls.
type timedSink struct {
	tracing.Sink
	latency map[bool]prometheus.Observer
	batch   prometheus.Observer
}

func (m *metrics) timeSink(name string, s tracing.Sink) tracing.Sink {
	return &timedSink{Sink: s, batch: m.sinkBatch.WithLabelValues(name), latency: map[bool]prometheus.Observer{
		true: m.sinkLatency.WithLabelValues(name, "ok"), false: m.sinkLatency.WithLabelValues(name, "error"),
	}}
}

func (s *timedSink) WriteBatch(ctx context.Context, batch []*tracing.Trace) error {
	start := time.Now()
	err := s.Sink.WriteBatch(ctx, batch)
	s.latency[err == nil].Observe(time.Since(start).Seconds())
	s.batch.Observe(float64(len(batch)))
	return err
}

// pipelineCollector exposes the trace pipeline's counters, read at each scrape.
type pipelineCollector struct{ stats func() tracing.Stats }

var (
	descRecorded   = prometheus.NewDesc("loom_traces_recorded_total", "Traces accepted by the pipeline.", nil, nil)
	descWritten    = prometheus.NewDesc("loom_traces_written_total", "Traces acknowledged by every sink.", nil, nil)
	descPending    = prometheus.NewDesc("loom_traces_pending", "Traces queued or spooled, not yet acknowledged by every sink.", nil, nil)
	descSpooled    = prometheus.NewDesc("loom_traces_spooled_total", "Traces durably appended to the spool.", nil, nil)
	descReplayed   = prometheus.NewDesc("loom_traces_replayed", "Traces found in the spool at start, not yet acknowledged.", nil, nil)
	descRetries    = prometheus.NewDesc("loom_trace_write_retries_total", "Failed sink writes, retried later.", nil, nil)
	descSealErrors = prometheus.NewDesc("loom_trace_seal_errors_total", "Trace bodies dropped because sealing failed.", nil, nil)
	descSyncErrors = prometheus.NewDesc("loom_trace_spool_sync_errors_total", "Failed fsyncs of the spool.", nil, nil)
	descMemory     = prometheus.NewDesc("loom_trace_memory_bytes", "Memory the traces waiting in the pipeline hold.", nil, nil)
	descQuarantine = prometheus.NewDesc("loom_traces_quarantined_total", "Traces a sink refused permanently, set aside in the spool's dead-letter file (once per refusing sink).", nil, nil)
	descRefusing   = prometheus.NewDesc("loom_trace_sinks_refusing", "Sinks treated as down after refusing traces in a row; their traces wait in the spool.", nil, nil)
	descLost       = prometheus.NewDesc("loom_traces_lost_total", "Traces that could not be kept, by reason.", []string{"reason"}, nil)
)

func (c pipelineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecorded, descWritten, descPending, descSpooled, descReplayed,
		descRetries, descSealErrors, descSyncErrors, descMemory, descQuarantine, descRefusing, descLost} {
		ch <- d
	}
}

func (c pipelineCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(descRecorded, st.Recorded)
	counter(descWritten, st.Written)
	gauge(descPending, st.Pending)
	counter(descSpooled, st.Spooled)
	gauge(descReplayed, st.Replayed)
	counter(descRetries, st.Retries)
	counter(descSealErrors, st.SealErrors)
	counter(descSyncErrors, st.SyncErrors)
	gauge(descMemory, st.MemoryBytes)
	counter(descQuarantine, st.Quarantined)
	gauge(descRefusing, st.RefusingSinks)
	for _, l := range []struct {
		reason string
		n      int64
	}{
		{"queue_full", st.LostQueueFull}, {"closed", st.LostClosed}, {"spool_full", st.LostSpoolFull},
		{"write_error", st.LostWrite}, {"encode_error", st.LostEncode}, {"corrupt_spool", st.LostCorrupt},
		{"shutdown", st.LostShutdown}, {"refused", st.LostRefused}, {"lagging_sink", st.LostLagging},
	} {
		counter(descLost, l.n, l.reason)
	}
}

// storeCollector exposes how the gateway fares with its Store, read at each scrape.
type storeCollector struct{ stats func() StoreStats }

var (
	descAuthHits    = prometheus.NewDesc("loom_auth_cache_hits_total", "API keys answered from the auth cache.", nil, nil)
	descAuthMisses  = prometheus.NewDesc("loom_auth_cache_misses_total", "API keys looked up in the store.", nil, nil)
	descAuthErrors  = prometheus.NewDesc("loom_auth_store_errors_total", "Key lookups in the store that failed.", nil, nil)
	descAuthStale   = prometheus.NewDesc("loom_auth_served_stale_total", "Requests whose API key was answered past the cache TTL because the store failed (degraded auth).", nil, nil)
	descRoutesStale = prometheus.NewDesc("loom_routes_served_stale_total", "Requests whose tenant provider configurations were used past the cache TTL because the store failed.", nil, nil)
	descKeySetKeys  = prometheus.NewDesc("loom_auth_key_set_keys", "Keys held for a store outage (0: key set off).", nil, nil)
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAuthHits, descAuthMisses, descAuthErrors, descAuthStale, descRoutesStale, descKeySetKeys} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, v := range []struct {
		d *prometheus.Desc
		n int64
	}{
		{descAuthHits, st.AuthCacheHits}, {descAuthMisses, st.AuthCacheMisses}, {descAuthErrors, st.AuthStoreErrors},
		{descAuthStale, st.AuthServedStale}, {descRoutesStale, st.RoutesServedStale},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.n))
	}
	ch <- prometheus.MustNewConstMetric(descKeySetKeys, prometheus.GaugeValue, float64(st.KeySetKeys))
}

// unpricedCollector exposes the requests with usage but no price, per provider and model
// (bounded where they are counted, see coster).
type unpricedCollector struct{ counts func() []UnpricedCount }

var descUnpriced = prometheus.NewDesc("loom_unpriced_requests_total",
	"Requests with usage but no price (model, service tier or token kind not in the price table).", []string{"provider", "model"}, nil)

func (c unpricedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descUnpriced }

func (c unpricedCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[UnpricedKey]bool{}
	for _, u := range c.counts() {
		k := UnpricedKey{labelSafe(u.Provider), labelSafe(u.Model)}
		if seen[k] { // two names made the same by labelSafe: a scrape must not repeat a series
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(descUnpriced, prometheus.CounterValue, float64(u.Requests), k.Provider, k.Model)
	}
}

// Metrics serves the gateway's metrics in the Prometheus exposition format: the registry
// it made for itself, or Config.Metrics when that is also a prometheus.Gatherer (as a
// *prometheus.Registry is). With a Registerer that cannot be gathered, it answers 404:
// serve that registry yourself.
func (g *Gateway) Metrics() http.Handler {
	if g.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(g.gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// sinkName names the i-th sink for the sink label.
func sinkName(i int, s tracing.Sink) string {
	if n, ok := s.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "sink" + strconv.Itoa(i)
}
