package estimate

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loom-gateway/loom/internal/sse"
	"github.com/loom-gateway/loom/provider"
)

const fixtures = "../../testdata/fixtures"

// reportedUsage returns the usage and model a recorded OpenAI or Azure answer reports.
func reportedUsage(t *testing.T, body []byte) (*provider.Usage, string) {
	t.Helper()
	if c := provider.ReadCompletion(body); c.Usage != nil {
		return c.Usage, string(c.Model)
	}
	var u *provider.Usage
	var model string
	for _, ev := range strings.SplitAfter(string(body), "\n\n") {
		c := provider.ReadCompletion(sse.Data([]byte(ev)))
		if c.Usage != nil {
			u = c.Usage
		}
		if len(c.Model) > 0 {
			model = string(c.Model)
		}
	}
	return u, model
}

// knownUnder are fixtures whose prompt the estimate cannot count: GPT-5 renders function
// definitions in an unpublished format. The test holds them to an under-estimate.
var knownUnder = map[string]bool{"azure_chat_stream_tool_calls_reasoning": true}

// TestPromptAccuracy checks the prompt estimate against the prompt_tokens every recorded
// OpenAI and Azure answer with a known request reports: within 2 %, but for knownUnder.
// (Anthropic's fixtures are left out: Claude's tokenizer is not public, and its count is an
// approximation.)
func TestPromptAccuracy(t *testing.T) {
	c := New()
	metas, err := filepath.Glob(filepath.Join(fixtures, "*.meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, meta := range metas {
		name := strings.TrimSuffix(filepath.Base(meta), ".meta.json")
		if strings.HasPrefix(name, "anthropic_") {
			continue
		}
		var m struct {
			RequestBody string `json:"request_body"`
		}
		mb, err := os.ReadFile(meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatal(err)
		}
		bodyPath, _ := filepath.Glob(filepath.Join(fixtures, name+".[js]*"))
		if m.RequestBody == "" || len(bodyPath) != 1 {
			continue
		}
		body, err := os.ReadFile(bodyPath[0])
		if err != nil {
			t.Fatal(err)
		}
		u, model := reportedUsage(t, body)
		if u == nil {
			continue
		}
		checked++
		t.Run(name, func(t *testing.T) {
			got := c.Count(model, []byte(m.RequestBody), nil)
			off := math.Abs(float64(got.PromptTokens-u.PromptTokens)) / float64(u.PromptTokens)
			t.Logf("%s: estimated %d, reported %d (%.2f %%, %s)", model, got.PromptTokens, u.PromptTokens, off*100, got.Method)
			if knownUnder[name] {
				if got.PromptTokens >= u.PromptTokens {
					t.Errorf("prompt estimate %d ≥ reported %d: the known gap has closed, move the fixture to the 2 %% check", got.PromptTokens, u.PromptTokens)
				}
				return
			}
			if off > 0.02 {
				t.Errorf("prompt estimate %d vs reported %d: %.1f %% off, want ≤ 2 %%", got.PromptTokens, u.PromptTokens, off*100)
			}
		})
	}
	if checked < 6 {
		t.Errorf("only %d fixtures with a request and reported usage; the fixtures moved?", checked)
	}
}

// TestCompletionCount checks the completion estimate of the recorded GPT-4o text answers
// exactly: their completion_tokens are the tokens of their text. (GPT-5's answers spend
// tokens they do not show even with reasoning_tokens 0, so they cannot be checked so.)
func TestCompletionCount(t *testing.T) {
	c := New()
	tests := []struct {
		name string
		want int64 // the fixture's completion_tokens
	}{
		{"openai_chat_nonstream_usage.json", 12},
		{"openai_chat_stream_include_usage.sse", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(fixtures, tt.name))
			if err != nil {
				t.Fatal(err)
			}
			u, model := reportedUsage(t, body)
			if u == nil || u.CompletionTokens != tt.want || u.CompletionTokensDetails.ReasoningTokens != 0 {
				t.Fatalf("fixture usage %+v, want %d completion tokens without reasoning", u, tt.want)
			}
			got := c.Count(model, nil, body)
			if got.CompletionTokens != tt.want {
				t.Errorf("completion estimate %d, reported %d", got.CompletionTokens, tt.want)
			}
		})
	}
}
