package analytics_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/tracing"
)

// TestUsageExport: GET /v1/analytics/usage sums the tenant's traces per UTC day, provider,
// model and key, in the providers' export columns, and never shows another tenant's.
func TestUsageExport(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			e := newAPIEnv(t, be)
			day := time.Date(2026, 11, 3, 23, 59, 59, 0, time.UTC)
			a1, a2 := newTrace(e.a, day), newTrace(e.a, day.Add(time.Minute)) // 2026-11-04
			a3 := newTrace(e.a, day.Add(-time.Hour))
			a3.Provider, a3.ServedModel, a3.CachedTokens, a3.CacheWrite5mTokens, a3.CacheWrite1hTokens = "anthropic", "claude-sonnet-4-20250514", 0, 30, 40
			a4 := newTrace(e.a, day.Add(2*time.Minute))
			a3.ServiceTier, a3.AudioPromptTokens, a3.AcceptedPredictionTokens, a3.RejectedPredictionTokens = "standard", 0, 0, 0
			a4.CostMicroUSD, a4.UsageSource, a4.ServedModel = nil, tracing.UsageEstimated, "my-model"
			a4.UsageMethod, a4.AudioPromptTokens, a4.AudioCompletionTokens, a4.AcceptedPredictionTokens, a4.RejectedPredictionTokens = "tiktoken/o200k_base", 0, 0, 0, 0
			b1 := newTrace(e.b, day) // the other tenant's
			e.insert(t, a1, a2, a3, a4, b1)

			status, hd, body := e.get(t, e.a.key, "/v1/analytics/usage?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z")
			if status != http.StatusOK || hd.Get("Content-Type") != "text/csv; charset=utf-8" {
				t.Fatalf("%d %s: %s", status, hd.Get("Content-Type"), body)
			}
			key := e.a.keyID
			want := analyticsCSV(
				// a1: 100 prompt (10 cached), 20 completion (5 reasoning), 1500 µUSD.
				analytics.UsageRow{Date: "2026-11-03", Provider: "anthropic", Model: "claude-sonnet-4-20250514", APIKeyID: key,
					Requests: 1, InputTokens: 100, CacheWrite5mTokens: 30, CacheWrite1hTokens: 40, OutputTokens: 20, ReasoningTokens: 5, CostMicroUSD: 1500},
				analytics.UsageRow{Date: "2026-11-03", Provider: "openai", Model: "gpt-4o-2024-08-06", APIKeyID: key,
					Requests: 1, InputTokens: 100, CachedTokens: 10, OutputTokens: 20, ReasoningTokens: 5, CostMicroUSD: 1500},
				analytics.UsageRow{Date: "2026-11-04", Provider: "openai", Model: "gpt-4o-2024-08-06", APIKeyID: key,
					Requests: 1, InputTokens: 100, CachedTokens: 10, OutputTokens: 20, ReasoningTokens: 5, CostMicroUSD: 1500},
				analytics.UsageRow{Date: "2026-11-04", Provider: "openai", Model: "my-model", APIKeyID: key,
					Requests: 1, InputTokens: 100, CachedTokens: 10, OutputTokens: 20, ReasoningTokens: 5, UnpricedRequests: 1, EstimatedRequests: 1},
			)
			if diff := cmp.Diff(want, string(body)); diff != "" {
				t.Errorf("usage export (-want +got):\n%s", diff)
			}
			// The first row as the columns spell it: uncached = 100 − 0 − 30 − 40 = 30,
			// 1500 µUSD = 0.0015 USD.
			if line := strings.Split(string(body), "\n")[1]; line != "2026-11-03,anthropic,claude-sonnet-4-20250514,"+key+",1,100,30,0,30,40,0,20,5,0,0.0015,0,0" {
				t.Errorf("first row %q", line)
			}
			// The trace list carries the usage in full too.
			listed := map[string]analytics.Trace{}
			for _, r := range e.listAll(t, e.a.key, "") {
				listed[r.ID] = r
			}
			for _, tr := range []*tracing.Trace{a3, a4} {
				if diff := cmp.Diff(row(tr), listed[tr.ID]); diff != "" {
					t.Errorf("listed trace (-want +got):\n%s", diff)
				}
			}
			if status, _, _ := e.get(t, e.a.key, "/v1/analytics/usage?from=nope"); status != http.StatusBadRequest {
				t.Errorf("bad from: %d", status)
			}
			if status, _, _ := e.get(t, "", "/v1/analytics/usage"); status != http.StatusUnauthorized {
				t.Errorf("no key: %d", status)
			}
		})
	}
}

func analyticsCSV(rows ...analytics.UsageRow) string {
	out := strings.Join(analytics.UsageColumns, ",") + "\n"
	for _, r := range rows {
		out += strings.Join(r.Record(), ",") + "\n"
	}
	return out
}
