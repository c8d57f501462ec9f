package analytics_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/tracing"
)

// TestSpend: spend by tenant, key and model, for one tenant or all, over ranges whose ends
// fall inside minutes, hours and quarter days, equals what the test sums from the traces
// it wrote; on both stores.
func TestSpend(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			_, sink, store, fold := be.open(t, true)
			spender, ok := store.(analytics.Spender)
			if !ok {
				t.Fatalf("%T is not an analytics.Spender", store)
			}
			rnd := rand.New(rand.NewPCG(11, 12))
			base := time.Date(2026, 8, 30, 0, 0, 0, 0, time.UTC)
			var all []*tracing.Trace
			for _, tenant := range []string{"ten-a", "ten-b", "ten-<script>"} {
				for _, key := range []string{"key-1", "key-2"} {
					all = append(all, randomTraces(rnd, tenantKey{id: tenant, keyID: key}, base, base.Add(50*time.Hour), 150)...)
				}
			}
			for i := 0; i < len(all); i += 200 {
				if err := sink.WriteBatch(t.Context(), all[i:min(i+200, len(all))]); err != nil {
					t.Fatal(err)
				}
				if i == 400 { // the first batches folded, the rest still deltas
					if _, err := fold.All(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := func(q analytics.SpendQuery) []analytics.SpendRow {
				byKey := map[[3]string]*analytics.SpendRow{}
				for _, tr := range all {
					if (q.TenantID != "" && tr.TenantID != q.TenantID) || (!q.From.IsZero() && tr.CreatedAt.Before(q.From)) ||
						(!q.To.IsZero() && !tr.CreatedAt.Before(q.To)) {
						continue
					}
					k := [3]string{tr.TenantID, tr.APIKeyID, tr.Model}
					r := byKey[k]
					if r == nil {
						r = &analytics.SpendRow{TenantID: k[0], APIKeyID: k[1], Model: k[2]}
						byKey[k] = r
					}
					r.Requests++
					r.PromptTokens += tr.PromptTokens
					r.CompletionTokens += tr.CompletionTokens
					if tr.CostMicroUSD == nil {
						r.Unpriced++
					} else {
						r.CostMicroUSD += *tr.CostMicroUSD
					}
				}
				out := []analytics.SpendRow{}
				for _, r := range byKey {
					out = append(out, *r)
				}
				slices.SortFunc(out, func(a, b analytics.SpendRow) int {
					return strings.Compare(a.TenantID+"\x00"+a.APIKeyID+"\x00"+a.Model, b.TenantID+"\x00"+b.APIKeyID+"\x00"+b.Model)
				})
				return out
			}
			odd := base.Add(7*time.Hour + 13*time.Minute + 5*time.Second + 777*time.Microsecond)
			for _, q := range []analytics.SpendQuery{
				{},
				{TenantID: "ten-b"},
				{TenantID: "ten-<script>", From: odd, To: odd.Add(30 * time.Hour)},
				{From: odd, To: odd.Add(20*time.Hour + 41*time.Minute)},
				{From: base.Add(6 * time.Hour), To: base.Add(12 * time.Hour)},
				{From: odd, To: odd.Add(40 * time.Second)},
				{TenantID: "nobody"},
			} {
				got, err := spender.Spend(t.Context(), q)
				if err != nil {
					t.Fatal(err)
				}
				w := want(q)
				if len(w) == 0 && q.TenantID != "nobody" {
					t.Fatalf("query %+v selects no traces", q)
				}
				if diff := cmp.Diff(w, got); diff != "" {
					t.Errorf("spend %+v (-want +got):\n%s", q, diff)
				}
			}
			if _, err := spender.Spend(t.Context(), analytics.SpendQuery{From: base, To: base.Add(-time.Second)}); err == nil {
				t.Error("spend with to before from: no error")
			}
		})
	}
}
