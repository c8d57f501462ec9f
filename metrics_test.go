package loom_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// scrape fetches h's metrics in the protobuf format (which carries native histograms)
// and, to check the text format parses too, in the text format.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	got := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode protobuf exposition: %v", err)
		}
		got[mf.GetName()] = mf
	}
	text, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer text.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(text.Body)
	if err != nil {
		t.Fatalf("parse text exposition: %v", err)
	}
	for name := range got {
		if fams[name] == nil {
			t.Errorf("%s is in the protobuf exposition but not the text one", name)
		}
	}
	return got
}

// sample finds the metric of family name with exactly the labels given.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels map[string]string) *dto.Metric {
	t.Helper()
	mf := fams[name]
	if mf == nil {
		t.Fatalf("metric %s missing", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("%s is a %v, want %v", name, mf.GetType(), typ)
	}
	var seen []string
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if cmp.Equal(labels, got) || (len(labels) == 0 && len(got) == 0) {
			return m
		}
		seen = append(seen, m.String())
	}
	t.Fatalf("%s%v missing; have:\n%s", name, labels, strings.Join(seen, "\n"))
	return nil
}

func TestMetricsAfterKnownTraffic(t *testing.T) {
	okBody := fixture(t, "openai_chat_cached_tokens.json")
	ok := newFakeUpstream(t, http.StatusOK, okBody)
	bad := newFakeUpstream(t, http.StatusNotFound, fixture(t, "openai_error_404_model_not_found.json"))
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens: unreachable
	e := newEnv(t, []loom.Route{
		openAIRoute(ok),
		{Name: "bad", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: bad.URL + "/v1", APIKey: "k"})},
		{Name: "down", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: down.URL + "/v1", APIKey: "k"})},
	})
	ctx := context.Background()
	const okRequests = 3
	for range okRequests {
		if _, err := e.client().Chat.Completions.New(ctx, chatParams("openai/gpt-4o")); err != nil {
			t.Fatal(err)
		}
	}
	statuses := map[string]int{}
	for _, c := range []struct{ key, model string }{
		{e.key, "bad/gpt-4o"}, {e.key, "down/gpt-4o"}, {e.key, "nosuchroute/gpt-4o"}, {"loom_wrong", "openai/gpt-4o"},
	} {
		resp := e.post(t, c.key, `{"model":"`+c.model+`","messages":[{"role":"user","content":"hi"}]}`)
		io.Copy(io.Discard, resp.Body)
		statuses[c.model+" "+c.key[:5]] = resp.StatusCode
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+e.key)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	traces := e.traces(t, okRequests+3)
	var usage struct {
		Usage provider.Usage `json:"usage"`
	}
	if err := json.Unmarshal(okBody, &usage); err != nil {
		t.Fatal(err)
	}
	var cost int64
	for _, tr := range traces {
		if tr.CostMicroUSD != nil {
			cost += *tr.CostMicroUSD
		}
	}
	if cost == 0 {
		t.Fatal("no trace was priced: the cost metric cannot be checked")
	}

	fams := scrape(t, e.gw.Metrics())
	counter := func(name string, labels map[string]string) float64 {
		return sample(t, fams, name, dto.MetricType_COUNTER, labels).GetCounter().GetValue()
	}
	gauge := func(name string, labels map[string]string) float64 {
		return sample(t, fams, name, dto.MetricType_GAUGE, labels).GetGauge().GetValue()
	}
	class := func(status int) string { return string(rune('0'+status/100)) + "xx" }
	req4 := func(prov, model, cls string) map[string]string {
		return map[string]string{"route": "chat_completions", "provider": prov, "model": model, "status_class": cls}
	}
	pm := map[string]string{"provider": "openai", "model": "openai/gpt-4o"}
	tokens := func(typ string) map[string]string {
		return map[string]string{"provider": "openai", "model": "openai/gpt-4o", "type": typ}
	}
	unrouted := statuses["nosuchroute/gpt-4o loom_"]
	wrongKey := statuses["openai/gpt-4o loom_"]
	unroutedWant := map[string]float64{class(unrouted): 1}
	unroutedWant[class(wrongKey)]++

	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"requests ok", counter("loom_requests_total", req4("openai", "openai/gpt-4o", "2xx")), okRequests},
		{"requests upstream 404", counter("loom_requests_total", req4("bad", "bad/gpt-4o", class(statuses["bad/gpt-4o loom_"]))), 1},
		{"requests unreachable", counter("loom_requests_total", req4("down", "down/gpt-4o", class(statuses["down/gpt-4o loom_"]))), 1},
		{"requests unrouted and refused " + class(unrouted), counter("loom_requests_total", req4("none", "unknown", class(unrouted))), unroutedWant[class(unrouted)]},
		{"requests refused " + class(wrongKey), counter("loom_requests_total", req4("none", "unknown", class(wrongKey))), unroutedWant[class(wrongKey)]},
		{"requests models", counter("loom_requests_total", map[string]string{"route": "models", "provider": "none", "model": "unknown", "status_class": "2xx"}), 1},
		{"in flight", gauge("loom_requests_in_flight", nil), 0},
		{"streams in flight", gauge("loom_streams_in_flight", nil), 0},
		{"prompt tokens", counter("loom_tokens_total", tokens("prompt")), okRequests * float64(usage.Usage.PromptTokens)},
		{"completion tokens", counter("loom_tokens_total", tokens("completion")), okRequests * float64(usage.Usage.CompletionTokens)},
		{"cached tokens", counter("loom_tokens_total", tokens("cached")), okRequests * float64(usage.Usage.PromptTokensDetails.CachedTokens)},
		{"reasoning tokens", counter("loom_tokens_total", tokens("reasoning")), okRequests * float64(usage.Usage.CompletionTokensDetails.ReasoningTokens)},
		{"cost", counter("loom_cost_usd_total", pm) * 1e6, float64(cost)},
		{"upstream status errors", counter("loom_upstream_errors_total", map[string]string{"provider": "bad", "kind": "upstream_status"}), 1},
		{"unreachable errors", counter("loom_upstream_errors_total", map[string]string{"provider": "down", "kind": "unreachable"}), 1},
		// Eight requests with a key: the first with the tenant's and the one with a wrong
		// key are looked up, the six after the first are answered from the cache.
		{"auth cache misses", counter("loom_auth_cache_misses_total", nil), 2},
		{"auth cache hits", counter("loom_auth_cache_hits_total", nil), 6},
		{"auth store errors", counter("loom_auth_store_errors_total", nil), 0},
		{"auth served stale", counter("loom_auth_served_stale_total", nil), 0},
		{"traces recorded", counter("loom_traces_recorded_total", nil), float64(len(traces))},
		{"traces written", counter("loom_traces_written_total", nil), float64(len(traces))},
		{"traces pending", gauge("loom_traces_pending", nil), 0},
		{"sink batch sizes add up", sample(t, fams, "loom_trace_sink_batch_size", dto.MetricType_HISTOGRAM, map[string]string{"sink": "sink0"}).GetHistogram().GetSampleSum(), float64(len(traces))},
	}
	for _, reason := range []string{"queue_full", "closed", "spool_full", "write_error", "encode_error", "corrupt_spool", "shutdown", "refused", "lagging_sink"} {
		tests = append(tests, struct {
			name      string
			got, want float64
		}{"lost " + reason, counter("loom_traces_lost_total", map[string]string{"reason": reason}), 0})
	}
	for _, h := range []string{"loom_overhead_seconds", "loom_ttfb_seconds", "loom_upstream_latency_seconds"} {
		m := sample(t, fams, h, dto.MetricType_HISTOGRAM, pm).GetHistogram()
		tests = append(tests, struct {
			name      string
			got, want float64
		}{h + " count", float64(m.GetSampleCount()), okRequests})
		if m.GetSchema() == 0 && len(m.GetPositiveSpan()) == 0 && m.GetZeroCount() == 0 {
			t.Errorf("%s has no native buckets", h)
		}
		if b := m.GetBucket(); len(b) == 0 || b[0].GetUpperBound() > 50e-6 {
			t.Errorf("%s: the first classic bucket must be at most 50µs, got %v", h, b)
		}
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	// No tenant or key label anywhere by default.
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" || strings.Contains(l.GetValue(), e.tenantID) || strings.Contains(l.GetValue(), e.keyID) {
					t.Errorf("%s carries a tenant or key: %v", name, m.GetLabel())
				}
			}
		}
	}
}

func TestMetricsTenantLabel(t *testing.T) {
	ok := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_cached_tokens.json"))
	e := newEnv(t, []loom.Route{openAIRoute(ok)}, func(c *loom.Config) { c.MetricsTenantLabel = true })
	if _, err := e.client().Chat.Completions.New(context.Background(), chatParams("openai/gpt-4o")); err != nil {
		t.Fatal(err)
	}
	e.traces(t, 1)
	fams := scrape(t, e.gw.Metrics())
	got := sample(t, fams, "loom_requests_total", dto.MetricType_COUNTER, map[string]string{
		"route": "chat_completions", "provider": "openai", "model": "openai/gpt-4o", "status_class": "2xx", "tenant": e.tenantID,
	}).GetCounter().GetValue()
	if got != 1 {
		t.Errorf("requests for the tenant = %v, want 1", got)
	}
	sample(t, fams, "loom_cost_usd_total", dto.MetricType_COUNTER, map[string]string{"provider": "openai", "model": "openai/gpt-4o", "tenant": e.tenantID})
}

// TestMetricsModelCardinality: a client inventing model names on a route that passes any
// model upstream cannot grow the series without bound.
func TestMetricsModelCardinality(t *testing.T) {
	ok := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_cached_tokens.json"))
	e := newEnv(t, []loom.Route{{Name: "any", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: ok.URL + "/v1", APIKey: "k"})}})
	const sent = 260
	for i := range sent {
		resp := e.post(t, e.key, `{"model":"any/m`+string(rune('a'+i%26))+string(rune('a'+i/26))+`","messages":[{"role":"user","content":"hi"}]}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fams := scrape(t, e.gw.Metrics())
	models := map[string]float64{}
	for _, m := range fams["loom_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "model" {
				models[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	var total float64
	for _, n := range models {
		total += n
	}
	if total != sent {
		t.Errorf("requests counted = %v, want %d", total, sent)
	}
	if len(models) > 201 || models["other"] == 0 {
		names := make([]string, 0, len(models))
		for m := range models {
			names = append(names, m)
		}
		sort.Strings(names)
		t.Errorf("%d model labels (want at most 200 and \"other\"): %v", len(models), names)
	}
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is 4200 + 42?")},
	}
}

// downStore is a Store whose key lookups fail while down is set.
type downStore struct {
	tenancy.Store
	down atomic.Bool
}

func (s *downStore) LookupKey(ctx context.Context, hash [32]byte) (tenancy.APIKey, tenancy.Tenant, error) {
	if s.down.Load() {
		return tenancy.APIKey{}, tenancy.Tenant{}, errors.New("store down")
	}
	return s.Store.LookupKey(ctx, hash)
}

func TestMetricsAuthStoreErrors(t *testing.T) {
	var ds *downStore
	e := newEnv(t, nil, func(c *loom.Config) { ds = &downStore{Store: c.Store}; c.Store = ds })
	ds.down.Store(true)
	resp := e.post(t, "loom_"+strings.Repeat("x", 40), `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode < 500 {
		t.Fatalf("status %d with the store down", resp.StatusCode)
	}
	fams := scrape(t, e.gw.Metrics())
	for name, want := range map[string]float64{"loom_auth_store_errors_total": 1, "loom_auth_cache_misses_total": 1, "loom_auth_cache_hits_total": 0} {
		if got := sample(t, fams, name, dto.MetricType_COUNTER, nil).GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestMetricsHostileModel: whatever bytes a client sends as the model, the request is
// counted under a valid label and /metrics still parses.
func TestMetricsHostileModel(t *testing.T) {
	ok := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_cached_tokens.json"))
	e := newEnv(t, []loom.Route{{Name: "any", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: ok.URL + "/v1", APIKey: "k"})}})
	tests := []struct{ name, model, want string }{
		{"invalid UTF-8", "any/gpt\xff\xfe", "any/gpt\uFFFD"},
		{"NUL", `any/a\u0000b`, "any/a\x00b"},
		{"HTML", `any/<script>alert(1)</script>`, "any/<script>alert(1)</script>"},
		{"huge", "any/" + strings.Repeat("é", 400), "any/" + strings.Repeat("é", 126)},
	}
	for _, tt := range tests {
		resp := e.post(t, e.key, `{"model":"`+tt.model+`","messages":[{"role":"user","content":"hi"}]}`)
		io.Copy(io.Discard, resp.Body)
	}
	fams := scrape(t, e.gw.Metrics())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sample(t, fams, "loom_requests_total", dto.MetricType_COUNTER, map[string]string{
				"route": "chat_completions", "provider": "any", "model": tt.want, "status_class": "2xx"})
			if got := m.GetCounter().GetValue(); got != 1 {
				t.Errorf("count = %v, want 1", got)
			}
		})
	}
}
