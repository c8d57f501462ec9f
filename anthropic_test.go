package loom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

func anthropicRoute(f *fakeUpstream) loom.Route {
	return loom.Route{Name: "anthropic", Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: f.URL, APIKey: "sk-ant-upstream"})}
}

// anthropicParams is the recorded fixtures' request as an OpenAI client sends it.
func anthropicParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model: model,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Use parallel tool calling."),
			openai.UserMessage("Please retrieve the secrets associated with each of these passwords: mellon,radiance"),
		},
		Tools: toolParams,
	}
}

// checkAnthropicCall checks what the fake Anthropic received: the Messages API's path,
// headers and required members, translated from the OpenAI request.
func checkAnthropicCall(t *testing.T, up *fakeUpstream, stream bool) {
	t.Helper()
	call := up.lastCall(t)
	got := []any{call.Path, call.Header.Get("X-Api-Key"), call.Header.Get("Anthropic-Version"), call.Body["model"], call.Body["system"], call.Body["stream"] == true}
	want := []any{"/v1/messages", "sk-ant-upstream", "2023-06-01", "claude-sonnet-4-0", "Use parallel tool calling.", stream}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upstream request: path, key, version, model, system, stream (-want +got):\n%s", diff)
	}
	if n, ok := call.Body["max_tokens"].(float64); !ok || n <= 0 {
		t.Errorf("max_tokens = %v, want a positive number", call.Body["max_tokens"])
	}
	if _, ok := call.Body["stream_options"]; ok {
		t.Error("stream_options (an OpenAI member) was sent to Anthropic")
	}
	msgs, _ := call.Body["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["role"] != "user" {
		t.Errorf("messages = %v, want the user turn alone", call.Body["messages"])
	}
	tools, _ := call.Body["tools"].([]any)
	if len(tools) != 1 || tools[0].(map[string]any)["name"] != "secret_retrieval_tool" || tools[0].(map[string]any)["input_schema"] == nil {
		t.Errorf("tools = %v", call.Body["tools"])
	}
	if call.Header.Get("Authorization") != "" {
		t.Error("an Authorization header (the client's Loom key?) was passed to Anthropic")
	}
}

// anthropicToolCalls reads the tool calls of a recorded Anthropic answer: tool_use blocks
// of a message, or assembled from a stream's content_block_start and input_json_delta
// events. Arguments are compact JSON.
func anthropicToolCalls(t *testing.T, body []byte) []toolCall {
	t.Helper()
	type block struct {
		Type  string          `json:"type"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	}
	var calls []toolCall
	compact := func(s string) string {
		var b bytes.Buffer
		if err := json.Compact(&b, []byte(s)); err != nil {
			t.Fatalf("tool input %q: %v", s, err)
		}
		return b.String()
	}
	if !bytes.HasPrefix(body, []byte("event:")) {
		var msg struct{ Content []block }
		if err := json.Unmarshal(body, &msg); err != nil {
			t.Fatal(err)
		}
		for _, b := range msg.Content {
			if b.Type == "tool_use" {
				calls = append(calls, toolCall{b.ID, b.Name, compact(string(b.Input))})
			}
		}
		return calls
	}
	byIndex := map[int]int{}
	var args []string
	for _, ev := range sseEvents(body) {
		_, data, _ := bytes.Cut(ev, []byte("data: "))
		var e struct {
			Type         string `json:"type"`
			Index        int    `json:"index"`
			ContentBlock block  `json:"content_block"`
			Delta        struct {
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatalf("fixture event %s: %v", ev, err)
		}
		switch {
		case e.Type == "content_block_start" && e.ContentBlock.Type == "tool_use":
			byIndex[e.Index] = len(calls)
			calls = append(calls, toolCall{ID: e.ContentBlock.ID, Name: e.ContentBlock.Name})
			args = append(args, "")
		case e.Type == "content_block_delta":
			if i, ok := byIndex[e.Index]; ok {
				args[i] += e.Delta.PartialJSON
			}
		}
	}
	for i := range calls {
		calls[i].Arguments = args[i]
	}
	return calls
}

func TestAnthropicSDKNonStreaming(t *testing.T) {
	body := fixture(t, "anthropic_messages_tool_use.json")
	up := newFakeUpstream(t, http.StatusOK, body)
	e := newEnv(t, []loom.Route{anthropicRoute(up)})
	resp, err := e.client().Chat.Completions.New(context.Background(), anthropicParams("anthropic/claude-sonnet-4-0"))
	if err != nil {
		t.Fatal(err)
	}
	checkAnthropicCall(t, up, false)

	want := []toolCall{
		{"toolu_01BUvqBj8Yb34pNAbCJJY1oc", "secret_retrieval_tool", `{"password":"mellon"}`},
		{"toolu_01VPuQJ1LonDBYXrr8pqPkqQ", "secret_retrieval_tool", `{"password":"radiance"}`},
	}
	if diff := cmp.Diff(anthropicToolCalls(t, body), want); diff != "" {
		t.Fatalf("the fixture reader is off (-read +want):\n%s", diff)
	}
	if diff := cmp.Diff(want, sdkToolCalls(resp.Choices[0].Message.ToolCalls)); diff != "" {
		t.Errorf("tool calls (-want +got):\n%s", diff)
	}
	c := resp.Choices[0]
	got := []any{string(resp.Object), resp.Model, resp.ID, c.FinishReason, string(c.Message.Role), c.Message.Content,
		resp.Usage.PromptTokens, resp.Usage.CompletionTokens, resp.Usage.TotalTokens, resp.Usage.PromptTokensDetails.CachedTokens}
	wantFields := []any{"chat.completion", "claude-sonnet-4-20250514", "msg_018DaxGuCtuQ42XfuFiC1wxo", "tool_calls", "assistant",
		"I'll retrieve the secrets for both passwords you provided.", int64(416), int64(109), int64(525), int64(0)}
	if diff := cmp.Diff(wantFields, got); diff != "" {
		t.Errorf("object, model, id, finish, role, content, usage (-want +got):\n%s", diff)
	}
	for _, tc := range resp.Choices[0].Message.ToolCalls {
		if tc.Type != "function" {
			t.Errorf("tool call type = %q", tc.Type)
		}
	}

	traces := e.traces(t, 1)
	if len(traces) != 1 {
		t.Fatalf("%d traces, want 1", len(traces))
	}
	tr := traces[0]
	if diff := cmp.Diff([3]int64{416, 109, 0}, [3]int64{tr.PromptTokens, tr.CompletionTokens, tr.CachedTokens}); diff != "" {
		t.Errorf("trace usage (-want +got):\n%s", diff)
	}
	if tr.UsageSource != tracing.UsageReported || tr.Status != 200 || tr.Provider != "anthropic" || tr.ServedModel != "claude-sonnet-4-20250514" || tr.Stream {
		t.Errorf("trace = %+v", tr)
	}
	if tr.CostMicroUSD == nil || *tr.CostMicroUSD <= 0 {
		t.Errorf("trace cost = %v, want a price for %s", tr.CostMicroUSD, tr.ServedModel)
	}
	if _, resp := e.open(t, tr); !bytes.Contains(resp, []byte(`"chat.completion"`)) {
		t.Errorf("trace response body = %s, want the translated answer", resp)
	}
}

func TestAnthropicSDKStreaming(t *testing.T) {
	body := fixture(t, "anthropic_messages_stream_tool_use.sse")
	var wantContent strings.Builder
	for _, ev := range sseEvents(body) {
		_, data, _ := bytes.Cut(ev, []byte("data: "))
		var e struct {
			Delta struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"delta"`
		}
		json.Unmarshal(data, &e)
		if e.Delta.Type == "text_delta" {
			wantContent.WriteString(e.Delta.Text)
		}
	}
	wantCalls := anthropicToolCalls(t, body)
	if len(wantCalls) != 2 || wantCalls[1].Arguments != `{"password": "radiance"}` {
		t.Fatalf("the fixture reader is off: %+v", wantCalls)
	}

	for _, includeUsage := range []bool{false, true} {
		name := "usage stripped"
		if includeUsage {
			name = "usage asked"
		}
		t.Run(name, func(t *testing.T) {
			up := newFakeUpstream(t, http.StatusOK, body)
			e := newEnv(t, []loom.Route{anthropicRoute(up)})
			params := anthropicParams("anthropic/claude-sonnet-4-0")
			if includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			s := e.client().Chat.Completions.NewStreaming(context.Background(), params)
			var acc openai.ChatCompletionAccumulator
			var sawUsageChunk bool
			var content strings.Builder
			chunks := 0
			for s.Next() {
				c := s.Current()
				chunks++
				if !acc.AddChunk(c) {
					t.Fatalf("the SDK accumulator refused chunk %s", c.RawJSON())
				}
				if len(c.Choices) == 0 && c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
					sawUsageChunk = true
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
				}
				if strings.Contains(c.RawJSON(), `"error"`) {
					t.Errorf("a normal chunk carries an error member: %s", c.RawJSON())
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			checkAnthropicCall(t, up, true)

			if content.String() != wantContent.String() || acc.Choices[0].Message.Content != wantContent.String() {
				t.Errorf("content = %q (accumulated %q), want %q", content.String(), acc.Choices[0].Message.Content, wantContent.String())
			}
			if got := acc.Choices[0].FinishReason; got != "tool_calls" {
				t.Errorf("finish_reason = %q, want tool_calls", got)
			}
			if diff := cmp.Diff(wantCalls, sdkToolCalls(acc.Choices[0].Message.ToolCalls)); diff != "" {
				t.Errorf("tool calls (-want +got):\n%s", diff)
			}
			if sawUsageChunk != includeUsage {
				t.Errorf("client saw a usage chunk: %v, want %v", sawUsageChunk, includeUsage)
			}
			if includeUsage {
				if diff := cmp.Diff([3]int64{416, 109, 525}, [3]int64{acc.Usage.PromptTokens, acc.Usage.CompletionTokens, acc.Usage.TotalTokens}); diff != "" {
					t.Errorf("client usage (-want +got):\n%s", diff)
				}
			}
			if acc.ID != "msg_013zKrzHmx2EAPhcF2gQKQ4k" || acc.Model != "claude-sonnet-4-20250514" {
				t.Errorf("id %q, model %q", acc.ID, acc.Model)
			}

			// message_start's input tokens and message_delta's cumulative output tokens
			// (109, not 1 + 109).
			traces := e.traces(t, 1)
			if len(traces) != 1 {
				t.Fatalf("%d traces, want 1", len(traces))
			}
			tr := traces[0]
			if diff := cmp.Diff([3]int64{416, 109, 0}, [3]int64{tr.PromptTokens, tr.CompletionTokens, tr.CachedTokens}); diff != "" {
				t.Errorf("trace usage (-want +got):\n%s", diff)
			}
			if !tr.Stream || tr.Status != 200 || tr.UsageSource != tracing.UsageReported || tr.ServedModel != "claude-sonnet-4-20250514" ||
				tr.ClientAborted || tr.ErrorType != "" || tr.TTFBUS <= 0 || tr.TTFBUS > tr.LatencyUS {
				t.Errorf("trace = %+v", tr)
			}
			if tr.CostMicroUSD == nil || *tr.CostMicroUSD <= 0 {
				t.Errorf("trace cost = %v", tr.CostMicroUSD)
			}
		})
	}
}

func TestAnthropicErrors(t *testing.T) {
	tests := []struct {
		name       string
		fixture    string
		status     int
		wantStatus int
		wantBody   string
		wantRetry  string
	}{
		{"401 authentication", "anthropic_error_401_authentication.json", 401, 401,
			`{"error":{"message":"invalid x-api-key","type":"authentication_error","param":null,"code":null}}`, ""},
		{"529 overloaded answers 503", "anthropic_error_529_overloaded.json", 529, 503,
			`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}`, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeUpstream(t, tt.status, fixture(t, tt.fixture))
			e := newEnv(t, []loom.Route{anthropicRoute(up)})

			resp := e.post(t, e.key, `{"model":"anthropic/claude-sonnet-4-0","messages":[{"role":"user","content":"hi"}]}`)
			body, _ := io.ReadAll(resp.Body)
			got := []any{resp.StatusCode, string(body), resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type")}
			if diff := cmp.Diff([]any{tt.wantStatus, tt.wantBody, tt.wantRetry, "application/json"}, got); diff != "" {
				t.Errorf("status, body, Retry-After, Content-Type (-want +got):\n%s", diff)
			}

			// The official SDK sees an OpenAI API error of the same status.
			_, err := e.client().Chat.Completions.New(context.Background(), anthropicParams("anthropic/claude-sonnet-4-0"))
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want an *openai.Error", err)
			}
			var eb errorBody
			json.Unmarshal([]byte(tt.wantBody), &eb)
			if apiErr.StatusCode != tt.wantStatus || apiErr.Type != eb.Error.Type || apiErr.Message != eb.Error.Message {
				t.Errorf("SDK error: status %d, type %q, message %q", apiErr.StatusCode, apiErr.Type, apiErr.Message)
			}

			traces := e.traces(t, 2)
			if len(traces) != 2 {
				t.Fatalf("%d traces, want 2", len(traces))
			}
			for _, tr := range traces {
				if tr.Status != tt.wantStatus || tr.ErrorType != eb.Error.Type {
					t.Errorf("trace status %d, error type %q", tr.Status, tr.ErrorType)
				}
			}
		})
	}
}

// An error event mid-stream reaches the client as an OpenAI error event; the SDK reports
// it and the trace notes it.
func TestAnthropicErrorMidStream(t *testing.T) {
	body := []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-20250514\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n" +
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
	up := newFakeUpstream(t, http.StatusOK, body)
	e := newEnv(t, []loom.Route{anthropicRoute(up)})

	resp := e.post(t, e.key, `{"model":"anthropic/claude-sonnet-4-0","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	lines := readEvents(t, resp.Body)
	if len(lines) != 3 || string(lines[2]) != `data: {"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}` {
		t.Errorf("events = %q, want role, content, error", lines)
	}

	s := e.client().Chat.Completions.NewStreaming(context.Background(), anthropicParams("anthropic/claude-sonnet-4-0"))
	var content string
	for s.Next() {
		for _, ch := range s.Current().Choices {
			content += ch.Delta.Content
		}
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "Overloaded") || content != "partial" {
		t.Errorf("SDK: content %q, err %v", content, s.Err())
	}
	for _, tr := range e.traces(t, 2) {
		if tr.ErrorType != "upstream_error" || tr.Status != 200 {
			t.Errorf("trace status %d, error type %q", tr.Status, tr.ErrorType)
		}
	}
}
