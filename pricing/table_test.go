package pricing

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fixtureUsage reads the served model, usage and service tier a recorded answer reports,
// OpenAI style (Anthropic's input, cache reads and cache writes added into PromptTokens,
// as the adapter reports them). hasUsage is false when the answer carries none.
func fixtureUsage(t *testing.T, body []byte) (model string, u Usage, hasUsage bool) {
	t.Helper()
	type anthropicUsage struct {
		Input         *int64 `json:"input_tokens"`
		Output        *int64 `json:"output_tokens"`
		CacheRead     *int64 `json:"cache_read_input_tokens"`
		CacheCreation *int64 `json:"cache_creation_input_tokens"`
		Split         *struct {
			W5 int64 `json:"ephemeral_5m_input_tokens"`
			W1 int64 `json:"ephemeral_1h_input_tokens"`
		} `json:"cache_creation"`
	}
	type doc struct {
		Model       string `json:"model"`
		ServiceTier string `json:"service_tier"`
		Message     *struct {
			Model string          `json:"model"`
			Usage *anthropicUsage `json:"usage"`
		} `json:"message"`
		Usage json.RawMessage `json:"usage"`
	}
	var a anthropicUsage
	anthropic := false
	read := func(b []byte) {
		var d doc
		if json.Unmarshal(b, &d) != nil {
			return
		}
		if d.Model != "" {
			model = d.Model
		}
		if d.Message != nil {
			model, anthropic = d.Message.Model, true
			if d.Message.Usage != nil {
				a = *d.Message.Usage
			}
		}
		if len(d.Usage) == 0 || string(d.Usage) == "null" {
			return
		}
		var o struct {
			Prompt     *int64 `json:"prompt_tokens"`
			Completion int64  `json:"completion_tokens"`
			Prompt_    struct {
				Cached int64 `json:"cached_tokens"`
				Audio  int64 `json:"audio_tokens"`
			} `json:"prompt_tokens_details"`
			Completion_ struct {
				Audio int64 `json:"audio_tokens"`
			} `json:"completion_tokens_details"`
		}
		if json.Unmarshal(d.Usage, &o) == nil && o.Prompt != nil {
			u = Usage{PromptTokens: *o.Prompt, CompletionTokens: o.Completion, CachedTokens: o.Prompt_.Cached,
				AudioPromptTokens: o.Prompt_.Audio, AudioCompletionTokens: o.Completion_.Audio, ServiceTier: d.ServiceTier}
			hasUsage = true
			return
		}
		var au anthropicUsage // a message_delta's cumulative counts replace the start's
		if json.Unmarshal(d.Usage, &au) == nil {
			anthropic = true
			for _, f := range []struct{ dst, src **int64 }{{&a.Input, &au.Input}, {&a.Output, &au.Output}, {&a.CacheRead, &au.CacheRead}, {&a.CacheCreation, &au.CacheCreation}} {
				if *f.src != nil {
					*f.dst = *f.src
				}
			}
		}
	}
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		read(trimmed)
	} else {
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				read([]byte(data))
			}
		}
	}
	if anthropic && a.Input != nil {
		v := func(p *int64) int64 {
			if p == nil {
				return 0
			}
			return *p
		}
		u = Usage{PromptTokens: v(a.Input) + v(a.CacheRead) + v(a.CacheCreation), CompletionTokens: v(a.Output),
			CachedTokens: v(a.CacheRead), CacheWrite5mTokens: v(a.CacheCreation)}
		if a.Split != nil {
			u.CacheWrite5mTokens, u.CacheWrite1hTokens = a.Split.W5, a.Split.W1
		}
		hasUsage = true
	}
	return model, u, hasUsage
}

type priced struct {
	Resolved string
	MicroUSD int64
	Priced   bool
}

// TestFixtureCosts prices every recorded answer in testdata/fixtures by the model it says
// served it, with the default table. Every file must be listed, so a new fixture cannot
// go unpriced unnoticed.
func TestFixtureCosts(t *testing.T) {
	tab := mustDefault(t)
	want := map[string]priced{
		// gpt-4o: (3663−3584)·2_500_000 + 3584·1_250_000 + 117·10_000_000
		//       = 197_500_000 + 4_480_000_000 + 1_170_000_000 = 5_847_500_000 → 5847.5 → 5848.
		"openai_chat_cached_tokens.json": {"gpt-4o", 5848, true},
		// 75·2_500_000 + 53·10_000_000 = 717_500_000 → 717.5 → 718.
		"openai_chat_nonstream_tool_calls_parallel.json": {"gpt-4o", 718, true},
		"openai_chat_stream_tool_calls_parallel.sse":     {"gpt-4o", 718, true},
		// 16·2_500_000 + 12·10_000_000 = 160_000_000 → 160.
		"openai_chat_nonstream_usage.json": {"gpt-4o", 160, true},
		// 16·2_500_000 + 10·10_000_000 = 140_000_000 → 140.
		"openai_chat_stream_include_usage.sse": {"gpt-4o", 140, true},
		// Reasoning: gpt-5, its 64 reasoning tokens are inside the 75 completion tokens:
		// 15·1_250_000 + 75·10_000_000 = 768_750_000 → 768.75 → 769.
		"openai_chat_reasoning_gpt5.json": {"gpt-5", 769, true},
		// gpt-5-mini, all 50 completion tokens reasoning: 13·250_000 + 50·2_000_000
		// = 103_250_000 → 103.25 → 103.
		"openai_chat_reasoning_length_empty_content.json": {"gpt-5-mini", 103, true},
		// Azure's gpt-5-mini: 15·250_000 + 12·2_000_000 = 27_750_000 → 27.75 → 28.
		"azure_chat_nonstream_filters.json":           {"gpt-5-mini", 28, true},
		"azure_chat_stream_filters_include_usage.sse": {"gpt-5-mini", 28, true},
		// 159·250_000 + 127·2_000_000 = 293_750_000 → 293.75 → 294.
		"azure_chat_stream_tool_calls_reasoning.sse": {"gpt-5-mini", 294, true},
		// Claude Sonnet 4, no cache use: 416·3_000_000 + 109·15_000_000 = 2_883_000_000 → 2883.
		"anthropic_messages_tool_use.json":       {"claude-sonnet-4", 2883, true},
		"anthropic_messages_stream_tool_use.sse": {"claude-sonnet-4", 2883, true},
		// No usage in the answer (the gateway estimates these): the -0125 snapshot resolves
		// to its family, the 2024-05-13 snapshot to its own entry.
		"openai_chat_stream_plain.sse":                   {Resolved: "gpt-3.5-turbo"},
		"openai_chat_stream_tool_call_no_usage_2024.sse": {Resolved: "gpt-3.5-turbo"},
		"azure_chat_stream_async_filter_EDITED.sse":      {Resolved: "gpt-4o-2024-05-13"},
		// Errors: no model, no usage.
		"anthropic_error_401_authentication.json":     {},
		"anthropic_error_529_overloaded.json":         {},
		"azure_error_400_content_filter.json":         {},
		"openai_error_400_unsupported_parameter.json": {},
		"openai_error_401_invalid_api_key.json":       {},
		"openai_error_404_model_not_found.json":       {},
	}
	files, err := filepath.Glob("../testdata/fixtures/*")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, path := range files {
		name := filepath.Base(path)
		if strings.HasSuffix(name, ".meta.json") || strings.HasSuffix(name, ".md") {
			continue
		}
		seen++
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("fixture %s is not in the table", name)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			model, u, hasUsage := fixtureUsage(t, body)
			var got priced
			_, got.Resolved, _ = tab.Lookup(model)
			if hasUsage {
				got.MicroUSD, got.Priced = tab.Cost(model, u)
			}
			if diff := cmp.Diff(w, got); diff != "" {
				t.Errorf("model %q, usage %+v (-want +got):\n%s", model, u, diff)
			}
		})
	}
	if seen != len(want) {
		t.Errorf("%d fixtures, %d in the table: a fixture was removed", seen, len(want))
	}
}

// TestCostCases prices the cases a bill is made of, each computed by hand: rates are
// micro-USD per million tokens, so cost = Σ tokens·rate / 10⁶, rounded half up once.
func TestCostCases(t *testing.T) {
	tab := mustDefault(t)
	tests := []struct {
		name  string
		model string
		usage Usage
		want  priced
	}{
		{
			// Cache write, 5 minutes (Sonnet 4.5: input 3, write 3.75, output 15):
			// 100·3_000_000 + 10_000·3_750_000 + 500·15_000_000
			// = 300_000_000 + 37_500_000_000 + 7_500_000_000 = 45_300_000_000 → 45300.
			name: "cache write 5m", model: "claude-sonnet-4-5-20250929",
			usage: Usage{PromptTokens: 10_100, CacheWrite5mTokens: 10_000, CompletionTokens: 500},
			want:  priced{"claude-sonnet-4-5", 45_300, true},
		},
		{
			// Cache write, 1 hour, and a cache read (Opus 4.1: input 15, read 1.50,
			// write 1h 30, output 75): 50·15_000_000 + 1000·1_500_000 + 2000·30_000_000
			// + 100·75_000_000 = 750_000_000 + 1_500_000_000 + 60_000_000_000
			// + 7_500_000_000 = 69_750_000_000 → 69750.
			name: "cache write 1h and read", model: "claude-opus-4-1-20250805",
			usage: Usage{PromptTokens: 3050, CachedTokens: 1000, CacheWrite1hTokens: 2000, CompletionTokens: 100},
			want:  priced{"claude-opus-4-1", 69_750, true},
		},
		{
			// Long context: Sonnet 4 above 200k input tokens is 6 in, 22.50 out for the
			// whole request: 250_000·6_000_000 + 1000·22_500_000
			// = 1_500_000_000_000 + 22_500_000_000 = 1_522_500_000_000 → 1_522_500.
			name: "long context", model: "claude-sonnet-4-20250514",
			usage: Usage{PromptTokens: 250_000, CompletionTokens: 1000},
			want:  priced{"claude-sonnet-4", 1_522_500, true},
		},
		{
			// At the threshold, still standard: 200_000·3_000_000 + 1000·15_000_000
			// = 600_000_000_000 + 15_000_000_000 → 615_000.
			name: "long context threshold", model: "claude-sonnet-4",
			usage: Usage{PromptTokens: 200_000, CompletionTokens: 1000},
			want:  priced{"claude-sonnet-4", 615_000, true},
		},
		{
			// Flex (o3 flex: input 1, cached 0.25, output 4): 8000·1_000_000
			// + 2000·250_000 + 5000·4_000_000 = 8_000_000_000 + 500_000_000
			// + 20_000_000_000 = 28_500_000_000 → 28500.
			name: "flex tier", model: "o3-2025-04-16",
			usage: Usage{PromptTokens: 10_000, CachedTokens: 2000, CompletionTokens: 5000, ServiceTier: "flex"},
			want:  priced{"o3", 28_500, true},
		},
		{
			// Flex with reasoning (gpt-5-mini flex: 0.125, cached 0.0125, output 1):
			// 500·125_000 + 500·12_500 + 100·1_000_000 = 62_500_000 + 6_250_000
			// + 100_000_000 = 168_750_000 → 168.75 → 169.
			name: "flex gpt-5-mini", model: "gpt-5-mini-2025-08-07",
			usage: Usage{PromptTokens: 1000, CachedTokens: 500, CompletionTokens: 100, ServiceTier: "flex"},
			want:  priced{"gpt-5-mini", 169, true},
		},
		{
			// Priority (gpt-4o priority: 4.25, output 17): 1000·4_250_000 + 100·17_000_000
			// = 4_250_000_000 + 1_700_000_000 = 5_950_000_000 → 5950.
			name: "priority tier", model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100, ServiceTier: "priority"},
			want:  priced{"gpt-4o", 5950, true},
		},
		{
			// "default" is the standard price: 1000·2_500_000 + 100·10_000_000 → 3500.
			name: "default tier", model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100, ServiceTier: "default"},
			want:  priced{"gpt-4o", 3500, true},
		},
		{
			name: "tier without a price is unpriced", model: "gpt-4-turbo",
			usage: Usage{PromptTokens: 1000, ServiceTier: "priority"},
			want:  priced{Resolved: "gpt-4-turbo"},
		},
		{
			// Azure's name for gpt-3.5-turbo (0.50 in, 1.50 out): 1000·500_000
			// + 200·1_500_000 = 500_000_000 + 300_000_000 = 800_000_000 → 800.
			name: "Azure name", model: "gpt-35-turbo",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 200},
			want:  priced{"gpt-3.5-turbo", 800, true},
		},
		{
			// The -MMDD snapshot at its family's price, as "Azure name": 800.
			name: "MMDD snapshot", model: "gpt-3.5-turbo-0125",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 200},
			want:  priced{"gpt-3.5-turbo", 800, true},
		},
		{
			// A snapshot priced apart keeps its own price (1.50 in, 2.00 out):
			// 1000·1_500_000 + 200·2_000_000 = 1_900_000_000 → 1900.
			name: "MMDD snapshot with its own price", model: "gpt-3.5-turbo-0613",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 200},
			want:  priced{"gpt-3.5-turbo-0613", 1900, true},
		},
		{
			// Azure's spelling of that snapshot: as above, 1900.
			name: "Azure snapshot", model: "azure/gpt-35-turbo-0613",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 200},
			want:  priced{"gpt-3.5-turbo-0613", 1900, true},
		},
		{
			// gpt-4o-2024-05-13 is 5 in, 15 out, not gpt-4o's 2.50 / 10:
			// 1000·5_000_000 + 100·15_000_000 = 6_500_000_000 → 6500.
			name: "dated snapshot with its own price", model: "gpt-4o-2024-05-13",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100},
			want:  priced{"gpt-4o-2024-05-13", 6500, true},
		},
		{
			// Audio (gpt-4o-audio-preview: text 2.50 / 10, audio 40 / 80):
			// 200·2_500_000 + 800·40_000_000 + 100·10_000_000 + 400·80_000_000
			// = 500_000_000 + 32_000_000_000 + 1_000_000_000 + 32_000_000_000
			// = 65_500_000_000 → 65500.
			name: "audio", model: "gpt-4o-audio-preview-2024-12-17",
			usage: Usage{PromptTokens: 1000, AudioPromptTokens: 800, CompletionTokens: 500, AudioCompletionTokens: 400},
			want:  priced{"gpt-4o-audio-preview", 65_500, true},
		},
		{
			name: "audio on a model without an audio price is unpriced", model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, AudioPromptTokens: 10},
			want:  priced{Resolved: "gpt-4o"},
		},
		{
			name: "cache writes on a model without a cache-write price are unpriced", model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, CacheWrite5mTokens: 10},
			want:  priced{Resolved: "gpt-4o"},
		},
		{
			// Bedrock's id for Claude 3.5 Haiku (0.80 in, 4 out): 1000·800_000
			// + 100·4_000_000 = 1_200_000_000 → 1200.
			name: "Bedrock id", model: "us.anthropic.claude-3-5-haiku-20241022-v1:0",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100},
			want:  priced{"claude-3-5-haiku", 1200, true},
		},
		{
			// -latest alias, as "Bedrock id": 1200.
			name: "latest alias", model: "claude-3-5-haiku-latest",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100},
			want:  priced{"claude-3-5-haiku", 1200, true},
		},
		{
			// Embedding (0.02 per million): 1_000_000·20_000 / 10⁶ = 20_000.
			name: "embedding", model: "text-embedding-3-small",
			usage: Usage{PromptTokens: 1_000_000},
			want:  priced{"text-embedding-3-small", 20_000, true},
		},
		{
			// Cache parts never exceed the prompt: 100 prompt tokens, 80 cached, the
			// 5m write clamped to the remaining 20 (Haiku 4.5: read 0.10, write 1.25):
			// 80·100_000 + 20·1_250_000 = 8_000_000 + 25_000_000 = 33_000_000 → 33.
			name: "cache parts clamped", model: "claude-haiku-4-5",
			usage: Usage{PromptTokens: 100, CachedTokens: 80, CacheWrite5mTokens: 500},
			want:  priced{"claude-haiku-4-5", 33, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got priced
			_, got.Resolved, _ = tab.Lookup(tt.model)
			got.MicroUSD, got.Priced = tab.Cost(tt.model, tt.usage)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%q %+v (-want +got):\n%s", tt.model, tt.usage, diff)
			}
		})
	}
}

// TestEveryModel checks every entry of the default table: it resolves to itself, in every
// snapshot form, it says where its prices come from, and its prices are consistent (a
// cache read is cheaper than input, a cache write dearer; a tier has input and output).
func TestEveryModel(t *testing.T) {
	tab := mustDefault(t)
	models := tab.Models()
	if len(models) < 50 {
		t.Fatalf("%d models in the default table", len(models))
	}
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			p, got, ok := tab.Lookup(m)
			if !ok || got != m {
				t.Fatalf("Lookup(%q) = %q, %v", m, got, ok)
			}
			if p.Source == "" || p.AsOf == "" {
				t.Errorf("no source or date: %q, %q", p.Source, p.AsOf)
			}
			for _, form := range []string{"openai/" + m, m + "-2099-01-02", "anthropic/" + m + "-20990102"} {
				if _, got, _ := tab.Lookup(form); got != m {
					t.Errorf("Lookup(%q) = %q, want %q", form, got, m)
				}
			}
			all := map[string]Rates{"standard": p.Rates}
			for name, r := range p.Tiers {
				all[name] = r
			}
			if p.LongContext != nil {
				all["long context"] = p.LongContext.Rates
			}
			for name, r := range all {
				if r.Input <= 0 || (r.Output <= 0 && !strings.HasPrefix(m, "text-embedding-")) {
					t.Errorf("%s: input %d, output %d", name, r.Input, r.Output)
				}
				if r.CachedInput != nil && *r.CachedInput >= r.Input {
					t.Errorf("%s: cache read %d not below input %d", name, *r.CachedInput, r.Input)
				}
				for _, w := range []*int64{r.CacheWrite5m, r.CacheWrite1h} {
					if w != nil && *w <= r.Input {
						t.Errorf("%s: cache write %d not above input %d", name, *w, r.Input)
					}
				}
			}
		})
	}
}
