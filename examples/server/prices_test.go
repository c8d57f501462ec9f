package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

func envOf(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestPricesList(t *testing.T) {
	override := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(override, []byte(`{"version": "acme-1", "models": {"acme-llm": {"input": 0.1, "output": 0.2,
		"service_tiers": {"flex": {"input": 0.05, "output": 0.1}}}}, "aliases": {"prod-4o": "gpt-4o"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runPrices(context.Background(), []string{}, envOf(map[string]string{"LOOM_PRICES_FILE": override}), &out); err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"price table acme-1",
		"gpt-4o standard 2.5 1.25 - - 10 - - 2025-11-24 https://platform.openai.com/docs/pricing",
		"gpt-4o priority 4.25 2.125 - - 17 - - 2025-11-24 https://platform.openai.com/docs/pricing",
		"claude-sonnet-4 prompt>200000 6 0.6 7.5 12 22.5 - - 2025-11-24 https://docs.anthropic.com/en/docs/about-claude/pricing",
		"acme-llm standard 0.1 - - - 0.2 - - - -",
		"acme-llm flex 0.05 - - - 0.1 - - - -",
		"prod-4o → gpt-4o",
	} {
		if !lines[want] {
			t.Errorf("no line %q in:\n%s", want, out.String())
		}
	}
}

func TestPricesUsage(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"check", "-from", "yesterday"}, {"export", "-from", "2026-02-01", "-to", "2026-01-01"}} {
		if err := runPrices(context.Background(), args, noEnv, io.Discard); err == nil {
			t.Errorf("prices %q: no error", args)
		}
	}
}

// reportTraces are stored traces for the reports: two days, two keys, priced, unpriced,
// estimated and missing usage, one trace outside the window, hostile names.
func reportTraces() []*tracing.Trace {
	day1 := time.Date(2026, 11, 3, 23, 59, 59, 0, time.UTC)
	day2 := time.Date(2026, 11, 4, 0, 0, 1, 0, time.UTC)
	cost := func(v int64) *int64 { return &v }
	tr := func(at time.Time, key, model, served string, prompt, completion int64, c *int64, src tracing.UsageSource) *tracing.Trace {
		return &tracing.Trace{ID: uuid.Must(uuid.NewV7()).String(), CreatedAt: at, TenantID: "t1", APIKeyID: key,
			Model: model, ServedModel: served, Provider: "openai", Status: 200,
			PromptTokens: prompt, CompletionTokens: completion, CostMicroUSD: c, UsageSource: src, PriceVersion: "v"}
	}
	a := tr(day1, "key-a", "gpt-4o", "gpt-4o-2024-08-06", 3663, 117, cost(5848), tracing.UsageReported)
	a.CachedTokens = 3584
	b := tr(day1, "key-a", "gpt-4o", "gpt-4o-2024-08-06", 16, 12, cost(160), tracing.UsageReported)
	c := tr(day2, "key-a", "gpt-4o", "gpt-4o-2024-08-06", 24, 4, cost(100), tracing.UsageEstimated)
	d := tr(day2, "key-b", "claude", "claude-sonnet-4-20250514", 10_100, 500, cost(45_300), tracing.UsageReported)
	d.Provider, d.CacheWrite5mTokens = "anthropic", 10_000
	e := tr(day2, "key-b", "my-fine-tune", "", 100, 10, nil, tracing.UsageReported)
	f := tr(day2, "key-b", "my-fine-tune", "", 50, 5, nil, tracing.UsageEstimated)
	g := tr(day2, "=key", "evil\x1b[2J", "", 7, 1, nil, tracing.UsageReported)
	h := tr(day2, "key-b", "gpt-4o", "", 0, 0, nil, tracing.UsageMissing) // an upstream error: not unpriced
	out := tr(day2.AddDate(0, 1, 0), "key-a", "my-fine-tune", "", 1, 1, nil, tracing.UsageReported)
	return []*tracing.Trace{a, b, c, d, e, f, g, h, out}
}

const wantCheck = `PROVIDER  MODEL          REQUESTS  PROMPT_TOKENS  COMPLETION_TOKENS  NOW_PRICED_AS
openai    "evil\x1b[2J"  1         7              1                  -
openai    my-fine-tune   2         150            15                 -
2 unpriced models in traces from 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z (price table 2025-11-24.2)
`

// The cost column sums the stored costs; the unpriced requests are counted apart.
const wantExport = `date_utc,provider,model,api_key_id,num_model_requests,input_tokens,input_uncached_tokens,input_cached_tokens,input_cache_write_5m_tokens,input_cache_write_1h_tokens,input_audio_tokens,output_tokens,output_reasoning_tokens,output_audio_tokens,cost_usd,unpriced_requests,estimated_requests
2026-11-03,openai,gpt-4o-2024-08-06,key-a,2,3679,95,3584,0,0,0,129,0,0,0.006008,0,0
2026-11-04,anthropic,claude-sonnet-4-20250514,key-b,1,10100,100,0,10000,0,0,500,0,0,0.0453,0,0
2026-11-04,openai,evil` + "\x1b" + `[2J,'=key,1,7,7,0,0,0,0,1,0,0,0,1,0
2026-11-04,openai,gpt-4o,key-b,1,0,0,0,0,0,0,0,0,0,0,0,0
2026-11-04,openai,gpt-4o-2024-08-06,key-a,1,24,24,0,0,0,0,4,0,0,0.0001,0,1
2026-11-04,openai,my-fine-tune,key-b,2,150,150,0,0,0,0,15,0,0,0,2,1
`

// TestPricesReports runs prices check and prices export against traces stored by the real
// sinks in both stores.
func TestPricesReports(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func(t *testing.T) (env map[string]string, sink tracing.Sink){
		"sqlite": func(t *testing.T) (map[string]string, tracing.Sink) {
			dir := t.TempDir()
			db, _, err := openReportStore(ctx, "", dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return map[string]string{"LOOM_DATA_DIR": dir}, tracing.NewSQLiteSink(db)
		},
		"postgres": func(t *testing.T) (map[string]string, tracing.Sink) {
			url := pgtest.New(t)
			db, _, err := openReportStore(ctx, url, "")
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{Now: func() time.Time { return time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC) }})
			if err != nil {
				t.Fatal(err)
			}
			return map[string]string{"DATABASE_URL": url}, sink
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			env, sink := open(t)
			if err := sink.WriteBatch(ctx, reportTraces()); err != nil {
				t.Fatal(err)
			}
			window := []string{"-from", "2026-11-01", "-to", "2026-12-01"}
			var out bytes.Buffer
			if err := runPrices(ctx, append([]string{"check"}, window...), envOf(env), &out); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantCheck, out.String()); diff != "" {
				t.Errorf("prices check (-want +got):\n%s", diff)
			}
			out.Reset()
			if err := runPrices(ctx, append([]string{"export"}, window...), envOf(env), &out); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantExport, out.String()); diff != "" {
				t.Errorf("prices export (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUnpricedVisible: the built-in mock model has no price, so its requests are counted
// in /metrics and listed by prices check against the server's own store.
func TestUnpricedVisible(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	s, _, closeServer := startServer(t, cfg, io.Discard)
	chat(t, s.Addr, s.BootstrapKey, "one")
	chat(t, s.Addr, s.BootstrapKey, "two")
	const want = `loom_unpriced_requests_total{model="mock-1",provider="mock"} 2`
	var metrics []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := s.Gateway.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + s.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(metrics, []byte(want)) {
			break
		}
	}
	if !bytes.Contains(metrics, []byte(want)) {
		t.Fatalf("no %q in /metrics:\n%s", want, metrics)
	}
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runPrices(context.Background(), []string{"check", "-data", dir}, noEnv, &out); err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(strings.Split(out.String(), "\n")[1])
	if len(fields) != 6 || fields[0] != "mock" || fields[1] != "mock-1" || fields[2] != "2" || fields[5] != "-" {
		t.Errorf("prices check:\n%s", out.String())
	}
}

func TestLogUnpriced(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	prices, err := loadPrices("")
	if err != nil {
		t.Fatal(err)
	}
	mock := provider.NewMock(provider.MockConfig{})
	logUnpriced(log, []loom.Route{
		{Name: "openai", Provider: mock, Models: []string{"gpt-4o", "gpt-3.5-turbo-0125", "my-fine-tune"}},
		{Name: "azure", Provider: mock, Models: []string{"gpt-35-turbo", "prod-eastus"}},
		{Name: "any", Provider: mock},
	}, prices)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		i := strings.Index(l, "provider=")
		got = append(got, l[i:])
	}
	want := []string{
		"provider=openai model=my-fine-tune price_table=2025-11-24.2",
		"provider=azure model=prod-eastus price_table=2025-11-24.2",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// TestAzureDeploymentModels: AZURE_OPENAI_DEPLOYMENTS "name=model" routes the name and
// prices it as the model, which the start-up check then finds priced.
func TestAzureDeploymentModels(t *testing.T) {
	cfg, err := parseConfig(nil, envOf(map[string]string{"AZURE_OPENAI_DEPLOYMENTS": "prod-eastus=gpt-4o-2024-08-06, plain ,old=gpt-35-turbo"}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"prod-eastus", "plain", "old"}, cfg.AzureModels); diff != "" {
		t.Errorf("deployments (-want +got):\n%s", diff)
	}
	prices, err := loadPrices("")
	if err != nil {
		t.Fatal(err)
	}
	prices = prices.WithAliases(cfg.AzureDeploymentModels)
	got := map[string]string{}
	for _, d := range cfg.AzureModels {
		_, got[d], _ = prices.Lookup("azure/" + d)
	}
	if diff := cmp.Diff(map[string]string{"prod-eastus": "gpt-4o", "plain": "", "old": "gpt-3.5-turbo"}, got); diff != "" {
		t.Errorf("priced as (-want +got):\n%s", diff)
	}
}
