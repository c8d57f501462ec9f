package provider

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func usageOf(prompt, completion, cached, audioIn, reasoning, audioOut, accepted, rejected, w5, w1 int64, tier string) *Usage {
	u := &Usage{PromptTokens: prompt, CompletionTokens: completion, CacheWrite5mTokens: w5, CacheWrite1hTokens: w1, ServiceTier: tier}
	u.PromptTokensDetails.CachedTokens, u.PromptTokensDetails.AudioTokens = cached, audioIn
	d := &u.CompletionTokensDetails
	d.ReasoningTokens, d.AudioTokens, d.AcceptedPredictionTokens, d.RejectedPredictionTokens = reasoning, audioOut, accepted, rejected
	return u
}

// TestReadCompletionFullUsage reads the details OpenAI reports beyond cached and reasoning
// tokens, and the service tier, which must look like a tier name to be kept.
func TestReadCompletionFullUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *Usage
	}{
		{
			name: "audio, predictions, flex",
			body: `{"model":"gpt-4o-audio-preview","service_tier":"flex","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50,
				"prompt_tokens_details":{"cached_tokens":10,"audio_tokens":40},
				"completion_tokens_details":{"reasoning_tokens":5,"audio_tokens":20,"accepted_prediction_tokens":3,"rejected_prediction_tokens":2}}}`,
			want: usageOf(100, 50, 10, 40, 5, 20, 3, 2, 0, 0, "flex"),
		},
		{
			name: "tier after usage",
			body: `{"usage":{"prompt_tokens":1,"completion_tokens":1},"service_tier":"priority"}`,
			want: usageOf(1, 1, 0, 0, 0, 0, 0, 0, 0, 0, "priority"),
		},
		{
			name: "hostile tier dropped",
			body: `{"usage":{"prompt_tokens":1,"completion_tokens":1},"service_tier":"<script>\u0000"}`,
			want: usageOf(1, 1, 0, 0, 0, 0, 0, 0, 0, 0, ""),
		},
		{
			name: "tier not a string",
			body: `{"usage":{"prompt_tokens":1,"completion_tokens":1},"service_tier":{"flex":true}}`,
			want: usageOf(1, 1, 0, 0, 0, 0, 0, 0, 0, 0, ""),
		},
		{name: "tier without usage", body: `{"service_tier":"flex"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ReadCompletion([]byte(tt.body)).Usage); diff != "" {
				t.Errorf("usage (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAnthropicUsageInFull: the adapter's Response.Usage keeps the cache writes by
// lifetime and the service tier, while the body the client gets stays OpenAI's format.
func TestAnthropicUsageInFull(t *testing.T) {
	tests := []struct {
		name, usage string
		want        *Usage
	}{
		{
			name:  "split by lifetime",
			usage: `{"input_tokens":10,"cache_read_input_tokens":200,"cache_creation_input_tokens":300,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":7,"service_tier":"priority"}`,
			want:  usageOf(510, 7, 200, 0, 0, 0, 0, 0, 100, 200, "priority"),
		},
		{
			// Answers before the 1-hour cache carry only the total: all 5-minute writes.
			name:  "total only",
			usage: `{"input_tokens":10,"cache_creation_input_tokens":300,"output_tokens":7}`,
			want:  usageOf(310, 7, 0, 0, 0, 0, 0, 0, 300, 0, ""),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":`+tt.usage+`}`)
			}))
			defer up.Close()
			p := NewAnthropic(AnthropicConfig{BaseURL: up.URL, APIKey: "k"})
			resp, err := p.Chat(context.Background(), &Request{Model: "claude-haiku-4-5", Body: []byte(`{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}`)})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			full := *tt.want
			full.TotalTokens = full.PromptTokens + full.CompletionTokens
			if diff := cmp.Diff(&full, resp.Usage); diff != "" {
				t.Errorf("Response.Usage (-want +got):\n%s", diff)
			}
			client := ReadCompletion(body).Usage // ReadCompletion does not read total_tokens
			want := *tt.want
			want.CacheWrite5mTokens, want.CacheWrite1hTokens, want.ServiceTier = 0, 0, ""
			if diff := cmp.Diff(&want, client); diff != "" {
				t.Errorf("client usage (-want +got):\n%s", diff)
			}
			if bytes.Contains(body, []byte("cache_creation")) || bytes.Contains(body, []byte("service_tier")) {
				t.Errorf("the client body carries fields OpenAI does not have: %s", body)
			}
		})
	}
}

// A served model written with JSON escapes is read as the name it spells.
func TestReadCompletionModelEscapes(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"model":"gpt-4o-mini"}`, "gpt-4o-mini"},
		{`{"model":"\u003cimg src=x\u003e"}`, "<img src=x>"},
		{`{"model":"a\"b\\c"}`, `a"b\c`},
	} {
		if got := string(ReadCompletion([]byte(tc.body)).Model); got != tc.want {
			t.Errorf("%s: model %q, want %q", tc.body, got, tc.want)
		}
	}
}
