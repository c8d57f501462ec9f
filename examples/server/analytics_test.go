package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
)

// TestServesAnalytics: the server wires the analytics API to the store its traces go to,
// for both stores.
func TestServesAnalytics(t *testing.T) {
	masterKey, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  func(t *testing.T) map[string]string
	}{
		{"sqlite", func(*testing.T) map[string]string { return nil }},
		{"postgres", func(t *testing.T) map[string]string {
			return map[string]string{"DATABASE_URL": pgtest.New(t), "LOOM_MASTER_KEY": masterKey}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env(t)
			cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			s, _, _ := startServer(t, cfg, &strings.Builder{})
			id := chat(t, s.Addr, s.BootstrapKey, "hello analytics")

			get := func(path string, v any) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr+path, nil)
				req.Header.Set("Authorization", "Bearer "+s.BootstrapKey)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d", path, resp.StatusCode)
				}
				if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
					t.Fatal(err)
				}
			}
			var page analytics.ListPage
			for deadline := time.Now().Add(10 * time.Second); len(page.Data) == 0 && time.Now().Before(deadline); {
				if err := s.Gateway.ForceFlush(context.Background()); err != nil {
					t.Fatal(err)
				}
				get("/v1/traces", &page)
			}
			if len(page.Data) != 1 || page.Data[0].ID != id {
				t.Fatalf("GET /v1/traces: %+v, want trace %s", page.Data, id)
			}
			var d analytics.Detail
			get("/v1/traces/"+id, &d)
			if d.RequestBody == nil || !strings.Contains(*d.RequestBody, "hello analytics") {
				t.Errorf("request body %v", d.RequestBody)
			}
			// The server's folder moves the batch's rollup delta into the rollup rows.
			var deltas, folded int
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				err := s.db.QueryRow(`SELECT (SELECT count(*) FROM trace_rollup_deltas),
					(SELECT coalesce(sum(requests), 0) FROM trace_rollup_totals WHERE grain_s = 60)`).Scan(&deltas, &folded)
				if err != nil {
					t.Fatal(err)
				}
				if deltas == 0 && folded == 1 {
					break
				}
			}
			if deltas != 0 || folded != 1 {
				t.Errorf("%d rollup deltas left, %d requests in the minute totals; want 0 and 1", deltas, folded)
			}
			// The folder counts the fold just after it commits.
			var missing []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				resp, err := http.Get("http://" + s.Addr + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				metrics, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				missing = nil
				for _, want := range []string{"loom_rollup_deltas_folded_total 1\n", "loom_rollup_fold_errors_total 0\n", "loom_rollup_last_fold_timestamp_seconds 1."} {
					if !strings.Contains(string(metrics), want) {
						missing = append(missing, want)
					}
				}
				if missing == nil {
					break
				}
			}
			if missing != nil {
				t.Errorf("/metrics lacks %q", missing)
			}
		})
	}
}
