package pricing

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustDefault(t testing.TB) *Table {
	t.Helper()
	tab, err := Default()
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	return tab
}

type costResult struct {
	MicroUSD int64
	OK       bool
}

func TestCost(t *testing.T) {
	tab := mustDefault(t)
	tests := []struct {
		name  string
		model string
		usage Usage
		want  costResult
	}{
		{
			// The fixture: uncached 110 × 2_500_000 = 275_000_000
			//            + cached 3584 × 1_250_000 = 4_480_000_000
			//            + output   57 × 10_000_000 = 570_000_000
			//            = 5_325_000_000 / 10⁶ = 5325 µUSD ($0.005325).
			name:  "gpt-4o fixture with cache",
			model: "gpt-4o",
			usage: Usage{PromptTokens: 3694, CompletionTokens: 57, CachedTokens: 3584},
			want:  costResult{5325, true},
		},
		{
			// 1000 × 2_500_000 + 500 × 10_000_000 = 7_500_000_000 → 7500.
			name:  "gpt-4o no cache",
			model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 500},
			want:  costResult{7500, true},
		},
		{
			// 12 × 150_000 + 7 × 600_000 = 6_000_000 → 6.
			name:  "gpt-4o-mini small",
			model: "gpt-4o-mini",
			usage: Usage{PromptTokens: 12, CompletionTokens: 7},
			want:  costResult{6, true},
		},
		{
			// 10 × 50_000 = 500_000 → 0.5 rounds half up to 1.
			name:  "round half up",
			model: "gpt-5-nano",
			usage: Usage{PromptTokens: 10},
			want:  costResult{1, true},
		},
		{
			// 9 × 50_000 = 450_000 → 0.45 rounds down to 0.
			name:  "round down below half",
			model: "gpt-5-nano",
			usage: Usage{PromptTokens: 9},
			want:  costResult{0, true},
		},
		{
			// No cached_input price: all 1000 prompt tokens at 500_000,
			// 1000 × 500_000 + 100 × 1_500_000 = 650_000_000 → 650.
			name:  "cached charged at input when no cached price",
			model: "gpt-3.5-turbo",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 100, CachedTokens: 400},
			want:  costResult{650, true},
		},
		{
			// Cached clamped to the 100 prompt tokens: 100 × 1_250_000 = 125_000_000 → 125.
			name:  "cached above prompt is clamped",
			model: "gpt-4o",
			usage: Usage{PromptTokens: 100, CachedTokens: 500},
			want:  costResult{125, true},
		},
		{
			// Negative cached counts as 0: 100 × 2_500_000 = 250_000_000 → 250.
			name:  "negative cached is clamped",
			model: "gpt-4o",
			usage: Usage{PromptTokens: 100, CachedTokens: -5},
			want:  costResult{250, true},
		},
		{
			name:  "negative counts are zero",
			model: "gpt-4o",
			usage: Usage{PromptTokens: -100, CompletionTokens: -1},
			want:  costResult{0, true},
		},
		{
			name:  "zero usage",
			model: "gpt-4o",
			usage: Usage{},
			want:  costResult{0, true},
		},
		{
			// As "gpt-4o no cache".
			name:  "provider prefix",
			model: "openai/gpt-4o",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 500},
			want:  costResult{7500, true},
		},
		{
			// As "gpt-4o no cache".
			name:  "dated snapshot",
			model: "gpt-4o-2024-08-06",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 500},
			want:  costResult{7500, true},
		},
		{
			// A snapshot with its own price wins over its base name:
			// 1000 × 5_000_000 + 500 × 15_000_000 = 12_500_000_000 → 12500.
			name:  "exact snapshot price",
			model: "gpt-4o-2024-05-13",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 500},
			want:  costResult{12500, true},
		},
		{
			// 12 × 150_000 + 7 × 600_000 = 6_000_000 → 6.
			name:  "prefix and dated snapshot",
			model: "openai/gpt-4o-mini-2024-07-18",
			usage: Usage{PromptTokens: 12, CompletionTokens: 7},
			want:  costResult{6, true},
		},
		{
			// claude-sonnet-4: 1000 × 3_000_000 + 1000 × 300_000 + 300 × 15_000_000
			// = 3_000_000_000 + 300_000_000 + 4_500_000_000 = 7_800_000_000 → 7800.
			name:  "anthropic compact date",
			model: "claude-sonnet-4-20250514",
			usage: Usage{PromptTokens: 2000, CompletionTokens: 300, CachedTokens: 1000},
			want:  costResult{7800, true},
		},
		{
			// One million tokens each way: 0.80 + 4.00 USD = 4_800_000 µUSD.
			name:  "anthropic prefix and date",
			model: "anthropic/claude-3-5-haiku-20241022",
			usage: Usage{PromptTokens: 1_000_000, CompletionTokens: 1_000_000},
			want:  costResult{4_800_000, true},
		},
		{
			// 50 × 15_000_000 + 2000 × 60_000_000 = 120_750_000_000 → 120750.
			name:  "o1 reasoning-heavy",
			model: "o1",
			usage: Usage{PromptTokens: 50, CompletionTokens: 2000},
			want:  costResult{120_750, true},
		},
		{
			// 10¹² × 600_000_000 = 6·10²⁰ (beyond 64 bits) → 6·10¹⁴ µUSD, exact.
			name:  "huge but exact",
			model: "o1-pro",
			usage: Usage{CompletionTokens: 1_000_000_000_000},
			want:  costResult{600_000_000_000_000, true},
		},
		{
			name:  "overflow",
			model: "o1-pro",
			usage: Usage{CompletionTokens: math.MaxInt64},
			want:  costResult{0, false},
		},
		{name: "unknown model", model: "llama-3-70b", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
		{name: "empty model", model: "", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
		{name: "no family guessing", model: "gpt-4o-mini-tts", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
		{name: "no prefix matching", model: "gpt-4o2", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
		{name: "bad date shape", model: "gpt-4o-2024-0806", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
		{name: "bare prefix", model: "openai/", usage: Usage{PromptTokens: 10}, want: costResult{0, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			microUSD, ok := tab.Cost(tt.model, tt.usage)
			if diff := cmp.Diff(tt.want, costResult{microUSD, ok}); diff != "" {
				t.Errorf("Cost(%q, %+v) (-want +got):\n%s", tt.model, tt.usage, diff)
			}
		})
	}
}

func TestNilTable(t *testing.T) {
	var tab *Table
	if _, ok := tab.Cost("gpt-4o", Usage{PromptTokens: 1}); ok {
		t.Error("nil table priced a model")
	}
	if v := tab.Version(); v != "" {
		t.Errorf("Version = %q", v)
	}
}

func TestDefault(t *testing.T) {
	tab := mustDefault(t)
	if tab.Version() == "" || tab.Notes() == "" {
		t.Errorf("version %q, notes %q: both required", tab.Version(), tab.Notes())
	}
	// The models the gateway must price out of the box, and what they resolve to.
	tests := []struct {
		name string
		want string
	}{
		{"gpt-4o", "gpt-4o"}, {"gpt-4o-mini", "gpt-4o-mini"},
		{"gpt-4.1", "gpt-4.1"}, {"gpt-4.1-mini", "gpt-4.1-mini"}, {"gpt-4.1-nano", "gpt-4.1-nano"},
		{"o1", "o1"}, {"o1-mini", "o1-mini"}, {"o3", "o3"}, {"o3-mini", "o3-mini"}, {"o4-mini", "o4-mini"},
		{"gpt-5", "gpt-5"}, {"gpt-5-mini", "gpt-5-mini"}, {"gpt-5-nano", "gpt-5-nano"},
		{"gpt-3.5-turbo", "gpt-3.5-turbo"}, {"gpt-4-turbo", "gpt-4-turbo"},
		{"gpt-4-turbo-2024-04-09", "gpt-4-turbo"}, {"o3-mini-2025-01-31", "o3-mini"},
		{"gpt-5-2025-08-07", "gpt-5"},
		{"claude-sonnet-4-0", "claude-sonnet-4"}, {"claude-sonnet-4-20250514", "claude-sonnet-4"},
		{"claude-3-5-haiku", "claude-3-5-haiku"}, {"claude-3-5-haiku-20241022", "claude-3-5-haiku"},
		{"claude-opus-4", "claude-opus-4"}, {"claude-opus-4-20250514", "claude-opus-4"},
		{"claude-opus-4-1-20250805", "claude-opus-4-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, got, ok := tab.Lookup(tt.name)
			if !ok {
				t.Fatalf("Lookup(%q): not priced", tt.name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lookup(%q) resolved (-want +got):\n%s", tt.name, diff)
			}
			if p.Input <= 0 || p.Output <= 0 || (p.CachedInput != nil && *p.CachedInput > p.Input) {
				t.Errorf("implausible price %+v", p)
			}
		})
	}
	p, _, _ := tab.Lookup("gpt-4o")
	want := Rates{Input: 2_500_000, CachedInput: ptr(int64(1_250_000)), Output: 10_000_000}
	if diff := cmp.Diff(want, p.Rates); diff != "" {
		t.Errorf("gpt-4o price (-want +got):\n%s", diff)
	}
}

func TestAliases(t *testing.T) {
	tab := mustDefault(t).WithAliases(map[string]string{
		"prod-4o":    "gpt-4o-2024-08-06",
		"eu-mini":    "gpt-4o-mini",
		"chain":      "prod-4o", // aliases do not chain
		"gone":       "gpt-9",
		"gpt-4o":     "gpt-4o-mini", // an alias is consulted before the exact name
		"shadow-old": "gpt-4o-2024-05-13",
	})
	tests := []struct {
		name  string
		model string
		want  string
		ok    bool
	}{
		{name: "deployment to dated model", model: "prod-4o", want: "gpt-4o", ok: true},
		{name: "deployment", model: "eu-mini", want: "gpt-4o-mini", ok: true},
		{name: "deployment with provider prefix", model: "azure/eu-mini", want: "gpt-4o-mini", ok: true},
		{name: "alias first", model: "gpt-4o", want: "gpt-4o-mini", ok: true},
		{name: "alias to exact snapshot", model: "shadow-old", want: "gpt-4o-2024-05-13", ok: true},
		{name: "no chains", model: "chain", ok: false},
		{name: "alias to unknown", model: "gone", ok: false},
		{name: "unaliased", model: "gpt-4.1", want: "gpt-4.1", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got, ok := tab.Lookup(tt.model)
			if diff := cmp.Diff(tt.want, got); diff != "" || ok != tt.ok {
				t.Errorf("Lookup(%q) = %q, %v, want %q, %v (-want +got):\n%s", tt.model, got, ok, tt.want, tt.ok, diff)
			}
		})
	}
	if _, _, ok := mustDefault(t).Lookup("prod-4o"); ok {
		t.Error("WithAliases changed the table it was called on")
	}
}

const overrideFile = `{
  "version": "2026-01-15-acme",
  "notes": "negotiated rates",
  "models": {
    "gpt-4o":   {"input": 2.00, "output": 8.00},
    "acme-llm": {"input": 0.10, "cached_input": 0.01, "output": 0.20}
  },
  "aliases": {"prod-4o": "gpt-4o"}
}`

func TestMergeOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(path, []byte(overrideFile), 0o600); err != nil {
		t.Fatal(err)
	}
	override, err := LoadFile(path)
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	base := mustDefault(t)
	merged := base.Merge(override)

	if diff := cmp.Diff("2026-01-15-acme", merged.Version()); diff != "" {
		t.Errorf("Version (-want +got):\n%s", diff)
	}
	tests := []struct {
		name  string
		model string
		usage Usage
		want  costResult
	}{
		{
			// Replaced whole, so no cached price any more: 1000 × 2_000_000 + 500 × 8_000_000
			// = 6_000_000_000 → 6000 (cached tokens at input).
			name:  "replaced price",
			model: "gpt-4o",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 500, CachedTokens: 800},
			want:  costResult{6000, true},
		},
		{
			// uncached 500 × 100_000 + cached 500 × 10_000 + output 1000 × 200_000
			// = 50_000_000 + 5_000_000 + 200_000_000 = 255_000_000 → 255.
			name:  "added model",
			model: "acme-llm",
			usage: Usage{PromptTokens: 1000, CompletionTokens: 1000, CachedTokens: 500},
			want:  costResult{255, true},
		},
		{
			// As "replaced price" without cache: 1000 × 2_000_000 = 2_000_000_000 → 2000.
			name:  "added alias",
			model: "prod-4o",
			usage: Usage{PromptTokens: 1000},
			want:  costResult{2000, true},
		},
		{
			// Untouched: 12 × 150_000 + 7 × 600_000 = 6_000_000 → 6.
			name:  "kept model",
			model: "gpt-4o-mini",
			usage: Usage{PromptTokens: 12, CompletionTokens: 7},
			want:  costResult{6, true},
		},
		{
			// Dated snapshots resolve to the replaced base price: 2_000_000_000 → 2000.
			name:  "snapshot follows override",
			model: "gpt-4o-2024-11-20",
			usage: Usage{PromptTokens: 1000},
			want:  costResult{2000, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			microUSD, ok := merged.Cost(tt.model, tt.usage)
			if diff := cmp.Diff(tt.want, costResult{microUSD, ok}); diff != "" {
				t.Errorf("Cost(%q) (-want +got):\n%s", tt.model, diff)
			}
		})
	}

	// The base table is unchanged.
	if got, _ := base.Cost("gpt-4o", Usage{PromptTokens: 1000}); got != 2500 {
		t.Errorf("base gpt-4o cost = %d after Merge, want 2500", got)
	}
	if _, ok := base.Cost("acme-llm", Usage{PromptTokens: 1}); ok {
		t.Error("Merge added a model to the base table")
	}
	if got := len(merged.Models()); got != len(base.Models())+1 {
		t.Errorf("merged has %d models, want %d", got, len(base.Models())+1)
	}
	if base.Merge(nil) != base {
		t.Error("Merge(nil) should return the table itself")
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "missing version", in: `{"models":{"m":{"input":1,"output":1}}}`, wantErr: "missing version"},
		{name: "negative price", in: `{"version":"v","models":{"m":{"input":-1,"output":1}}}`, wantErr: "negative"},
		{name: "too many digits", in: `{"version":"v","models":{"m":{"input":0.0000001,"output":1}}}`, wantErr: "more than 6 fractional digits"},
		{name: "float noise", in: `{"version":"v","models":{"m":{"input":1,"output":0.30000000000000004}}}`, wantErr: "output: price"},
		{name: "missing output", in: `{"version":"v","models":{"m":{"input":1}}}`, wantErr: "missing output"},
		{name: "missing input", in: `{"version":"v","models":{"m":{"output":1}}}`, wantErr: "missing input"},
		{name: "misspelt field", in: `{"version":"v","models":{"m":{"input":1,"cached-input":0.5,"output":1}}}`, wantErr: "unknown field"},
		{name: "unknown top-level field", in: `{"version":"v","model":{}}`, wantErr: "unknown field"},
		{name: "string not a number", in: `{"version":"v","models":{"m":{"input":"cheap","output":1}}}`, wantErr: "decode"},
		{name: "trailing data", in: `{"version":"v","models":{}} {}`, wantErr: "after the price table"},
		{name: "empty model name", in: `{"version":"v","models":{"":{"input":1,"output":1}}}`, wantErr: "empty model name"},
		{name: "empty alias target", in: `{"version":"v","models":{},"aliases":{"a":""}}`, wantErr: "empty name"},
		{name: "not json", in: `version: v`, wantErr: "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Load(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load = %v, %v; want an error containing %q", tab, err, tt.wantErr)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	if _, err := LoadFile(filepath.Join(t.TempDir(), "nope.json")); err == nil {
		t.Fatal("LoadFile of a missing file succeeded")
	}
}

func TestParseMicros(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "two decimals", in: "2.50", want: 2_500_000},
		{name: "integer", in: "10", want: 10_000_000},
		{name: "zero", in: "0", want: 0},
		{name: "zero decimals", in: "0.000", want: 0},
		{name: "one micro", in: "0.000001", want: 1},
		{name: "six digits", in: "0.075125", want: 75_125},
		{name: "trailing zeros past six", in: "2.5000000", want: 2_500_000},
		{name: "exponent", in: "1.25e-1", want: 125_000},
		{name: "positive exponent", in: "1E2", want: 100_000_000},
		{name: "explicit plus exponent", in: "2.5e+0", want: 2_500_000},
		{name: "largest", in: "9223372036854.775807", want: math.MaxInt64},
		{name: "seven digits", in: "0.0000001", wantErr: true},
		{name: "seven significant digits", in: "1.0000005", wantErr: true},
		{name: "float artefact", in: "0.30000000000000004", wantErr: true},
		{name: "exponent too small", in: "1e-7", wantErr: true},
		{name: "negative", in: "-1", wantErr: true},
		{name: "negative fraction", in: "-0.5", wantErr: true},
		{name: "negative zero", in: "-0", wantErr: true},
		{name: "too large", in: "9223372036854.775808", wantErr: true},
		{name: "huge exponent", in: "1e20", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "letters", in: "abc", wantErr: true},
		{name: "dangling point", in: "1.", wantErr: true},
		{name: "leading point", in: ".5", wantErr: true},
		{name: "plus sign", in: "+1", wantErr: true},
		{name: "bad exponent", in: "1e", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMicros(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseMicros(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMicros(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseMicros(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestStripSnapshot(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "dashed", in: "gpt-4o-2024-08-06", want: "gpt-4o"},
		{name: "compact", in: "claude-sonnet-4-20250514", want: "claude-sonnet-4"},
		{name: "none", in: "gpt-4o", want: ""},
		{name: "MMDD", in: "gpt-4-0613", want: "gpt-4"},
		{name: "not a month", in: "gpt-4-1306", want: ""},
		{name: "not a day", in: "gpt-4-0600", want: ""},
		{name: "latest", in: "claude-3-5-haiku-latest", want: "claude-3-5-haiku"},
		{name: "only latest", in: "-latest", want: ""},
		{name: "misplaced dashes", in: "gpt-4o-202-408-06", want: ""},
		{name: "letters", in: "gpt-4o-2024-08-0x", want: ""},
		{name: "only a date", in: "-20250514", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := stripSnapshot(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("stripSnapshot(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func BenchmarkCost(b *testing.B) {
	tab := mustDefault(b)
	u := Usage{PromptTokens: 3694, CompletionTokens: 57, CachedTokens: 3584}
	for _, model := range []string{"gpt-4o", "openai/gpt-4o-2024-08-06"} {
		b.Run(strings.ReplaceAll(model, "/", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tab.Cost(model, u); !ok {
					b.Fatal("unpriced")
				}
			}
		})
	}
}
