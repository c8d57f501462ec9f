package loom_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tiktoken-go/tokenizer"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
)

// costRow is what a trace stores of its usage and cost.
type costRow struct {
	Model, ServedModel, Provider, UsageSource, UsageMethod, ServiceTier string
	ClientAborted                                                       bool
	PromptTokens, CompletionTokens, CachedTokens                        int64
	CacheWrite5m, CacheWrite1h                                          int64
	CostMicroUSD                                                        *int64
}

func readCostRow(t *testing.T, s *sinkEnv, id string) (costRow, bool) {
	t.Helper()
	q := `SELECT model, served_model, provider, usage_source, usage_method, service_tier, client_aborted,
		prompt_tokens, completion_tokens, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_micro_usd
		FROM traces WHERE CAST(id AS TEXT) = ` + map[string]string{migrations.Postgres: "$1", migrations.SQLite: "?"}[s.dialect]
	var r costRow
	err := s.db.QueryRowContext(context.Background(), q, id).Scan(&r.Model, &r.ServedModel, &r.Provider, &r.UsageSource,
		&r.UsageMethod, &r.ServiceTier, &r.ClientAborted, &r.PromptTokens, &r.CompletionTokens, &r.CachedTokens,
		&r.CacheWrite5m, &r.CacheWrite1h, &r.CostMicroUSD)
	return r, err == nil
}

// waitCostRow flushes until the trace is stored.
func waitCostRow(t *testing.T, s *sinkEnv, id string) costRow {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.flush(t)
		if r, ok := readCostRow(t, s, id); ok {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s not stored", id)
		}
	}
}

// anthropicCacheStream is a Messages stream that read 2000 prompt tokens from the cache
// and wrote 3000 to it, 1000 for 5 minutes and 2000 for an hour.
const anthropicCacheStream = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"usage":{"input_tokens":100,"cache_creation_input_tokens":3000,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000},"output_tokens":1,"service_tier":"standard"}}}` + "\n\n" +
	"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Cached hello."}}` + "\n\n" +
	"event: content_block_stop\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n" +
	"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":50}}` + "\n\n" +
	"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"

// abortWords is what the aborting upstream streams before it waits for the client to leave.
var abortWords = strings.Fields("The quick brown fox jumps over the lazy dog while a reconciled invoice " +
	"matches every cached token, cache write and long-context tier to the micro-dollar, " +
	"tokenised, relayed, aborted and priced for exactly what was generated before the client left")

func costUpstream(t *testing.T, relayed chan<- struct{}) *httptest.Server {
	t.Helper()
	chunk := func(content string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":` +
			fmt.Sprintf("%q", content) + `},"finish_reason":null}]}` + "\n\n"
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		switch {
		case r.URL.Path == "/v1/messages":
			io.WriteString(w, anthropicCacheStream)
		case strings.Contains(string(body), "[abort]"):
			for i, word := range abortWords {
				if i > 0 {
					word = " " + word
				}
				io.WriteString(w, chunk(word))
				w.(http.Flusher).Flush()
			}
			relayed <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second): // deadlock guard
				t.Error("the upstream request of a client that left was not cancelled")
			}
		default: // an OpenAI-compatible server that ignores stream_options
			io.WriteString(w, chunk("No usage"))
			io.WriteString(w, chunk(" from this server."))
			io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
		}
	}))
	t.Cleanup(up.Close)
	return up
}

// o200k counts tokens with the tokenizer directly, apart from the gateway's estimator.
func o200k(t *testing.T, s string) int64 {
	t.Helper()
	c, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Count(s)
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}

// TestCostEndToEnd follows usage and cost from an upstream through the gateway into both
// databases: an Anthropic stream with cache writes of both lifetimes, an OpenAI stream the
// client abandons mid-way, and an upstream that never reports stream usage.
func TestCostEndToEnd(t *testing.T) {
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			relayed := make(chan struct{}, 1)
			up := costUpstream(t, relayed)
			s := newSinkEnv(t, dialect, []loom.Route{
				{Name: "anthropic", Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: up.URL, APIKey: "k"})},
				{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL})},
			})
			c := s.client()
			ctx := context.Background()
			params := func(model, prompt string) openai.ChatCompletionNewParams {
				p := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}}
				p.StreamOptions.IncludeUsage = openai.Bool(true)
				return p
			}

			t.Run("anthropic stream with cache writes", func(t *testing.T) {
				var hr *http.Response
				st := c.Chat.Completions.NewStreaming(ctx, params("anthropic/claude-sonnet-4-5", "hello"), option.WithResponseInto(&hr))
				var usage openai.CompletionUsage
				for st.Next() {
					if ch := st.Current(); ch.Usage.PromptTokens > 0 {
						usage = ch.Usage
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				// The client sees the faithful OpenAI translation: cache reads and writes
				// are prompt tokens, reads are cached_tokens.
				if usage.PromptTokens != 5100 || usage.PromptTokensDetails.CachedTokens != 2000 || usage.CompletionTokens != 50 {
					t.Errorf("client usage %+v", usage)
				}
				// Claude Sonnet 4.5: 100·3_000_000 + 2000·300_000 + 1000·3_750_000
				// + 2000·6_000_000 + 50·15_000_000 = 300_000_000 + 600_000_000
				// + 3_750_000_000 + 12_000_000_000 + 750_000_000 = 17_400_000_000 → 17400.
				want := costRow{Model: "anthropic/claude-sonnet-4-5", ServedModel: "claude-sonnet-4-5-20250929", Provider: "anthropic",
					UsageSource: "reported", ServiceTier: "standard", PromptTokens: 5100, CompletionTokens: 50, CachedTokens: 2000,
					CacheWrite5m: 1000, CacheWrite1h: 2000, CostMicroUSD: ptr[int64](17_400)}
				if diff := cmp.Diff(want, waitCostRow(t, s, hr.Header.Get("X-Request-Id"))); diff != "" {
					t.Errorf("stored (-want +got):\n%s", diff)
				}
			})

			t.Run("openai stream aborted by the client", func(t *testing.T) {
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				prompt := "Tell me a story [abort]"
				var hr *http.Response
				st := c.Chat.Completions.NewStreaming(cctx, params("openai/gpt-4o", prompt), option.WithResponseInto(&hr))
				var got strings.Builder
				for got.Len() < len(strings.Join(abortWords, " ")) && st.Next() {
					if ch := st.Current(); len(ch.Choices) > 0 {
						got.WriteString(ch.Choices[0].Delta.Content)
					}
				}
				<-relayed // the upstream has sent everything it will send
				cancel()
				st.Close()
				relayedText := strings.Join(abortWords, " ")
				if got.String() != relayedText {
					t.Fatalf("client read %q", got.String())
				}
				row := waitCostRow(t, s, hr.Header.Get("X-Request-Id"))
				// OpenAI's chat rules: 3 per message + role + content, 3 to prime the reply.
				wantPrompt := 3 + o200k(t, "user") + o200k(t, prompt) + 3
				wantCompletion := o200k(t, relayedText)
				for _, n := range []struct {
					what      string
					got, want int64
				}{{"prompt", row.PromptTokens, wantPrompt}, {"completion", row.CompletionTokens, wantCompletion}} {
					if off := math.Abs(float64(n.got-n.want)) / float64(n.want); off > 0.02 {
						t.Errorf("%s estimate %d, tokenizer %d: %.1f %% off", n.what, n.got, n.want, off*100)
					}
				}
				if !row.ClientAborted || row.UsageSource != "estimated" || row.UsageMethod != "tiktoken/o200k_base" {
					t.Errorf("stored %+v", row)
				}
				// gpt-4o at 2.50 / 10: priced for what was estimated.
				if wantCost := (row.PromptTokens*2_500_000 + row.CompletionTokens*10_000_000 + 500_000) / 1_000_000; row.CostMicroUSD == nil || *row.CostMicroUSD != wantCost {
					t.Errorf("cost %v, want %d", row.CostMicroUSD, wantCost)
				}
			})

			t.Run("upstream without stream usage", func(t *testing.T) {
				var hr *http.Response
				prompt := "Do you report usage?"
				st := c.Chat.Completions.NewStreaming(ctx, params("openai/gpt-4o", prompt), option.WithResponseInto(&hr))
				var content strings.Builder
				for st.Next() {
					ch := st.Current()
					if ch.Usage.TotalTokens != 0 {
						t.Errorf("the client got usage the upstream never sent: %+v", ch.Usage)
					}
					if len(ch.Choices) > 0 {
						content.WriteString(ch.Choices[0].Delta.Content)
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				promptTokens, completion := 3+o200k(t, "user")+o200k(t, prompt)+3, o200k(t, content.String())
				// (prompt·2_500_000 + completion·10_000_000) / 10⁶, rounded half up.
				cost := (promptTokens*2_500_000 + completion*10_000_000 + 500_000) / 1_000_000
				want := costRow{Model: "openai/gpt-4o", ServedModel: "gpt-4o-2024-08-06", Provider: "openai",
					UsageSource: "estimated", UsageMethod: "tiktoken/o200k_base", PromptTokens: promptTokens, CompletionTokens: completion,
					CostMicroUSD: &cost}
				if diff := cmp.Diff(want, waitCostRow(t, s, hr.Header.Get("X-Request-Id"))); diff != "" {
					t.Errorf("stored (-want +got):\n%s", diff)
				}
			})
		})
	}
}
