package loom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

type toolCall struct{ ID, Name, Arguments string }

// fixtureToolCalls reads the tool calls a recorded answer carries: from a chat completion
// body, or assembled from a stream's fragments.
func fixtureToolCalls(t *testing.T, body []byte) []toolCall {
	t.Helper()
	type call struct {
		Index    int    `json:"index"`
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	var calls []toolCall
	add := func(c call, i int) {
		for len(calls) <= i {
			calls = append(calls, toolCall{})
		}
		calls[i].ID += c.ID
		calls[i].Name += c.Function.Name
		calls[i].Arguments += c.Function.Arguments
	}
	if !bytes.HasPrefix(body, []byte("data:")) {
		var cc struct {
			Choices []struct {
				Message struct {
					ToolCalls []call `json:"tool_calls"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(body, &cc); err != nil {
			t.Fatal(err)
		}
		for i, c := range cc.Choices[0].Message.ToolCalls {
			add(c, i)
		}
		return calls
	}
	for _, ev := range sseEvents(body) {
		data := bytes.TrimPrefix(ev, []byte("data: "))
		if string(data) == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					ToolCalls []call `json:"tool_calls"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(data, &chunk); err != nil {
			t.Fatalf("fixture chunk: %v", err)
		}
		for _, ch := range chunk.Choices {
			for _, c := range ch.Delta.ToolCalls {
				add(c, c.Index)
			}
		}
	}
	return calls
}

func sdkToolCalls(calls []openai.ChatCompletionMessageToolCallUnion) []toolCall {
	var out []toolCall
	for _, c := range calls {
		out = append(out, toolCall{c.ID, c.Function.Name, c.Function.Arguments})
	}
	return out
}

func openAIRoute(f *fakeUpstream) loom.Route {
	return loom.Route{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: f.URL + "/v1", APIKey: "sk-upstream"}), Models: []string{"gpt-4o", "gpt-4o-mini"}}
}

func azureRoute(f *fakeUpstream, version string) loom.Route {
	return loom.Route{Name: "azure", Provider: provider.NewAzure(provider.AzureConfig{Endpoint: f.URL, APIKey: "az-key", APIVersion: version})}
}

var toolParams = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
	Name:       "secret_retrieval_tool",
	Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"password": map[string]any{"type": "string"}}},
})}

func TestSDKNonStreaming(t *testing.T) {
	tests := []struct {
		name      string
		fixture   string
		route     func(*fakeUpstream) loom.Route
		model     string
		wantPath  string
		wantQuery string
		wantModel string // the model the upstream was asked for
		wantAuth  [2]string
	}{
		{
			name: "openai tool calls", fixture: "openai_chat_nonstream_tool_calls_parallel.json",
			route: openAIRoute, model: "openai/gpt-4o",
			wantPath: "/v1/chat/completions", wantModel: "gpt-4o",
			wantAuth: [2]string{"Authorization", "Bearer sk-upstream"},
		},
		{
			name: "openai bare model with cached tokens", fixture: "openai_chat_cached_tokens.json",
			route: openAIRoute, model: "gpt-4o",
			wantPath: "/v1/chat/completions", wantModel: "gpt-4o",
			wantAuth: [2]string{"Authorization", "Bearer sk-upstream"},
		},
		{
			name: "azure classic deployment path", fixture: "azure_chat_nonstream_filters.json",
			route: func(f *fakeUpstream) loom.Route { return azureRoute(f, "2024-10-21") }, model: "azure/my-gpt5-mini",
			wantPath: "/openai/deployments/my-gpt5-mini/chat/completions", wantQuery: "api-version=2024-10-21", wantModel: "my-gpt5-mini",
			wantAuth: [2]string{"Api-Key", "az-key"},
		},
		{
			name: "azure v1 path", fixture: "azure_chat_nonstream_filters.json",
			route: func(f *fakeUpstream) loom.Route { return azureRoute(f, "") }, model: "azure/my-gpt5-mini",
			wantPath: "/openai/v1/chat/completions", wantModel: "my-gpt5-mini",
			wantAuth: [2]string{"Api-Key", "az-key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := fixture(t, tt.fixture)
			up := newFakeUpstream(t, http.StatusOK, body)
			e := newEnv(t, []loom.Route{tt.route(up)})
			resp, err := e.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model:    tt.model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is 4200 + 42?")},
				Tools:    toolParams,
			})
			if err != nil {
				t.Fatal(err)
			}
			// What the client got is what the upstream sent, byte for byte (the SDK trims
			// the final newline).
			if diff := cmp.Diff(strings.TrimSuffix(string(body), "\n"), resp.RawJSON()); diff != "" {
				t.Errorf("body (-upstream +client):\n%s", diff)
			}
			var want struct {
				Choices []struct {
					Message struct {
						Content *string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
			}
			json.Unmarshal(body, &want)
			if got := resp.Choices[0].FinishReason; got != want.Choices[0].FinishReason {
				t.Errorf("finish_reason = %q, want %q", got, want.Choices[0].FinishReason)
			}
			if w := want.Choices[0].Message.Content; w != nil && resp.Choices[0].Message.Content != *w {
				t.Errorf("content = %q, want %q", resp.Choices[0].Message.Content, *w)
			}
			if diff := cmp.Diff(fixtureToolCalls(t, body), sdkToolCalls(resp.Choices[0].Message.ToolCalls)); diff != "" {
				t.Errorf("tool calls (-want +got):\n%s", diff)
			}
			call := up.lastCall(t)
			got := []string{call.Path, call.Query, call.Body["model"].(string), call.Header.Get(tt.wantAuth[0])}
			if diff := cmp.Diff([]string{tt.wantPath, tt.wantQuery, tt.wantModel, tt.wantAuth[1]}, got); diff != "" {
				t.Errorf("upstream request: path, query, model, auth (-want +got):\n%s", diff)
			}
			if call.Header.Get("Authorization") == "Bearer "+e.key {
				t.Error("the client's Loom key was passed upstream")
			}

			traces := e.traces(t, 1)
			if len(traces) != 1 {
				t.Fatalf("%d traces, want 1", len(traces))
			}
			tr := traces[0]
			u := provider.ReadCompletion(body).Usage
			wantUsage := [4]int64{u.PromptTokens, u.CompletionTokens, u.PromptTokensDetails.CachedTokens, u.CompletionTokensDetails.ReasoningTokens}
			if diff := cmp.Diff(wantUsage, [4]int64{tr.PromptTokens, tr.CompletionTokens, tr.CachedTokens, tr.ReasoningTokens}); diff != "" {
				t.Errorf("trace usage (-want +got):\n%s", diff)
			}
			if tr.CostMicroUSD == nil || *tr.CostMicroUSD <= 0 {
				t.Errorf("trace cost = %v, want a price for %s", tr.CostMicroUSD, tr.ServedModel)
			}
			req, resp2 := e.open(t, tr)
			if !bytes.Contains(req, []byte("What is 4200 + 42?")) || !bytes.Equal(resp2, body) {
				t.Errorf("trace bodies: request %s, response %s", req, resp2)
			}
			if tr.UsageSource != tracing.UsageReported || tr.Status != 200 || tr.TenantID != e.tenantID || tr.APIKeyID != e.keyID ||
				tr.Model != tt.model || tr.ServedModel != resp.Model || tr.Stream || tr.ClientAborted {
				t.Errorf("trace = %+v", tr)
			}
			if tr.LatencyUS <= 0 || tr.OverheadUS <= 0 || tr.OverheadUS > tr.LatencyUS || tr.TTFBUS > tr.LatencyUS {
				t.Errorf("timings: latency %d, ttfb %d, overhead %d", tr.LatencyUS, tr.TTFBUS, tr.OverheadUS)
			}
		})
	}
}

func TestSDKStreaming(t *testing.T) {
	tests := []struct {
		name         string
		fixture      string
		route        func(*fakeUpstream) loom.Route
		model        string
		includeUsage bool
		wantUsage    [4]int64
	}{
		{"openai tool calls, usage stripped", "openai_chat_stream_tool_calls_parallel.sse", openAIRoute, "openai/gpt-4o", false, [4]int64{75, 53, 0, 0}},
		{"openai tool calls, usage asked", "openai_chat_stream_tool_calls_parallel.sse", openAIRoute, "openai/gpt-4o", true, [4]int64{75, 53, 0, 0}},
		{"openai text with usage", "openai_chat_stream_include_usage.sse", openAIRoute, "gpt-4o", true, [4]int64{}},
		{"azure filters and reasoning", "azure_chat_stream_tool_calls_reasoning.sse",
			func(f *fakeUpstream) loom.Route { return azureRoute(f, "2024-10-21") }, "azure/gpt-5-mini", true, [4]int64{}},
		{"azure filters, usage stripped", "azure_chat_stream_filters_include_usage.sse",
			func(f *fakeUpstream) loom.Route { return azureRoute(f, "") }, "azure/gpt-5-mini", false, [4]int64{}},
		{"azure async filter annotations", "azure_chat_stream_async_filter_EDITED.sse",
			func(f *fakeUpstream) loom.Route { return azureRoute(f, "") }, "azure/gpt-4o", false, [4]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := fixture(t, tt.fixture)
			up := newFakeUpstream(t, http.StatusOK, body)
			e := newEnv(t, []loom.Route{tt.route(up)})
			params := openai.ChatCompletionNewParams{
				Model:    tt.model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is 4200 + 42?")},
				Tools:    toolParams,
			}
			if tt.includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			s := e.client().Chat.Completions.NewStreaming(context.Background(), params)
			var acc openai.ChatCompletionAccumulator
			var sawUsageChunk bool
			var content strings.Builder
			for s.Next() {
				c := s.Current()
				// Azure's asynchronous content-filter annotations come after the finish with
				// an empty id; the accumulator skips them (and keeps what it has), a
				// plain reader of the stream gets them.
				if !acc.AddChunk(c) && c.ID != "" {
					t.Fatalf("the SDK accumulator refused chunk %s", c.RawJSON())
				}
				if len(c.Choices) == 0 && c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
					sawUsageChunk = true
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}

			// Expected from the recording itself.
			var wantContent strings.Builder
			var wantUsage *provider.Usage
			var wantFinish string
			for _, ev := range sseEvents(body) {
				data := bytes.TrimPrefix(ev, []byte("data: "))
				c := provider.ReadCompletion(data)
				if c.Usage != nil {
					wantUsage = c.Usage
				}
				var chunk struct {
					Choices []struct {
						Delta        struct{ Content string } `json:"delta"`
						FinishReason string                   `json:"finish_reason"`
					} `json:"choices"`
				}
				json.Unmarshal(data, &chunk)
				for _, ch := range chunk.Choices {
					wantContent.WriteString(ch.Delta.Content)
					if ch.FinishReason != "" {
						wantFinish = ch.FinishReason
					}
				}
			}
			if content.String() != wantContent.String() {
				t.Errorf("content = %q, want %q", content.String(), wantContent.String())
			}
			if got := acc.Choices[0].FinishReason; got != wantFinish {
				t.Errorf("finish_reason = %q, want %q", got, wantFinish)
			}
			if diff := cmp.Diff(fixtureToolCalls(t, body), sdkToolCalls(acc.Choices[0].Message.ToolCalls)); diff != "" {
				t.Errorf("tool calls (-want +got):\n%s", diff)
			}
			if want := tt.includeUsage && wantUsage != nil; sawUsageChunk != want {
				t.Errorf("client saw a usage chunk: %v, want %v", sawUsageChunk, want)
			}
			call := up.lastCall(t)
			if opts, _ := call.Body["stream_options"].(map[string]any); opts["include_usage"] != true {
				t.Errorf("upstream stream_options = %v, want include_usage true", call.Body["stream_options"])
			}

			traces := e.traces(t, 1)
			if len(traces) != 1 {
				t.Fatalf("%d traces, want 1", len(traces))
			}
			tr := traces[0]
			if wantUsage != nil {
				got := [4]int64{tr.PromptTokens, tr.CompletionTokens, tr.CachedTokens, tr.ReasoningTokens}
				want := [4]int64{wantUsage.PromptTokens, wantUsage.CompletionTokens, wantUsage.PromptTokensDetails.CachedTokens, wantUsage.CompletionTokensDetails.ReasoningTokens}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("trace usage (-want +got):\n%s", diff)
				}
				if tr.UsageSource != tracing.UsageReported {
					t.Errorf("usage source = %q", tr.UsageSource)
				}
			}
			if !tr.Stream || tr.Status != 200 || tr.ClientAborted || tr.TTFBUS <= 0 || tr.TTFBUS > tr.LatencyUS || tr.ServedModel == "" {
				t.Errorf("trace = %+v", tr)
			}
		})
	}
}

// A stream is relayed chunk by chunk: the upstream holds chunk 2 back until the client
// has received chunk 1, so a gateway that buffered would never deliver chunk 1.
func TestStreamIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	released := make(chan bool, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"first"},"finish_reason":null}]}`+"\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
			released <- true
		case <-time.After(20 * time.Second): // deadlock guard: the test fails below
			released <- false
		}
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" second"},"finish_reason":"stop"}]}`+"\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	e := newEnv(t, []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL})}})
	s := e.client().Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "openai/gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	if got := s.Current().Choices[0].Delta.Content; got != "first" {
		t.Fatalf("first chunk content = %q", got)
	}
	close(release)
	if !<-released {
		t.Fatal("the client did not get chunk 1 before the upstream sent chunk 2")
	}
	var rest string
	for s.Next() {
		if len(s.Current().Choices) > 0 {
			rest += s.Current().Choices[0].Delta.Content
		}
	}
	if s.Err() != nil || rest != " second" {
		t.Fatalf("rest = %q, err %v", rest, s.Err())
	}
}

// A client that leaves mid-stream cancels the upstream request, and the trace is still
// written, marked aborted, with the usage estimated from what was relayed.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	upstreamDone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only once the body is read
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"one", "two", "three"} {
			io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"`+word+`"},"finish_reason":null}]}`+"\n\n")
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
		close(upstreamDone)
	}))
	defer up.Close()
	e := newEnv(t, []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL})}})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"count"}]}`))
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var got []byte
	for bytes.Count(got, []byte("data:")) < 3 {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
	}
	cancel()
	resp.Body.Close()

	select {
	case <-upstreamDone:
	case <-time.After(20 * time.Second): // deadlock guard
		t.Fatal("the upstream request was not cancelled")
	}
	// The handler records the trace as it returns; wait for it.
	traces := e.traces(t, 1)
	if len(traces) != 1 {
		t.Fatalf("%d traces, want 1", len(traces))
	}
	tr := traces[0]
	// The completion is counted over the content relayed, "onetwothree": 4 o200k tokens.
	if !tr.ClientAborted || tr.UsageSource != tracing.UsageEstimated || tr.CompletionTokens != 4 || tr.ServedModel != "gpt-4o-2024-08-06" {
		t.Errorf("trace = %+v", tr)
	}
	if _, resp := e.open(t, tr); !bytes.Contains(resp, []byte(`"three"`)) {
		t.Errorf("trace response body = %q, want the relayed chunks", resp)
	}
}

func TestErrors(t *testing.T) {
	authErr := fixture(t, "openai_error_401_invalid_api_key.json")
	up := newFakeUpstream(t, http.StatusUnauthorized, authErr)
	filterErr := fixture(t, "azure_error_400_content_filter.json")
	azureUp := newFakeUpstream(t, http.StatusBadRequest, filterErr)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only once the body is read
		<-r.Context().Done()
	}))
	defer slow.Close()
	htmlUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer htmlUp.Close()

	e := newEnv(t, []loom.Route{
		{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL}), Models: []string{"gpt-4o"}},
		azureRoute(azureUp, "2024-10-21"),
		{Name: "slow", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: slow.URL})},
		{Name: "html", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: htmlUp.URL})},
		{Name: "down", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: "http://127.0.0.1:1"})},
	}, func(c *loom.Config) {
		c.MaxBodyBytes = 1 << 10
		c.UpstreamTimeout = 200 * time.Millisecond
	})
	ctx := context.Background()
	_, revokedKey, _ := e.gw.Admin().CreateKey(ctx, e.tenantID, "old")
	revokedRaw := mustRevoke(t, e, revokedKey.ID)
	_ = revokedKey
	other, _ := e.gw.Admin().CreateTenant(ctx, "gone")
	inactiveRaw, _, _ := e.gw.Admin().CreateKey(ctx, other.ID, "k")
	if err := e.gw.Admin().SetTenantStatus(ctx, other.ID, "inactive"); err != nil {
		t.Fatal(err)
	}

	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name       string
		key        string
		body       string
		wantStatus int
		wantType   string
		wantCode   string
		wantParam  string
		wantBody   []byte // an upstream error passed through as is
	}{
		{name: "malformed JSON", body: `{"model":`, wantStatus: 400, wantType: "invalid_request_error"},
		{name: "not an object", body: `[1,2]`, wantStatus: 400, wantType: "invalid_request_error"},
		{name: "missing model", body: `{` + msgs + `}`, wantStatus: 400, wantType: "invalid_request_error", wantParam: "model"},
		{name: "model of the wrong type", body: `{"model":42,` + msgs + `}`, wantStatus: 400, wantType: "invalid_request_error", wantParam: "model"},
		{name: "missing messages", body: `{"model":"gpt-4o"}`, wantStatus: 400, wantType: "invalid_request_error", wantParam: "messages"},
		{name: "messages of the wrong type", body: `{"model":"gpt-4o","messages":"hi"}`, wantStatus: 400, wantType: "invalid_request_error", wantParam: "messages"},
		{name: "stream of the wrong type", body: `{"model":"gpt-4o","stream":"yes",` + msgs + `}`, wantStatus: 400, wantType: "invalid_request_error", wantParam: "stream"},
		{name: "body over the limit", body: `{"model":"gpt-4o",` + msgs + `,"pad":"` + strings.Repeat("x", 2<<10) + `"}`, wantStatus: 413, wantType: "invalid_request_error", wantCode: "request_too_large"},
		{name: "unknown model", body: `{"model":"gpt-9",` + msgs + `}`, wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found", wantParam: "model"},
		{name: "unknown provider prefix", body: `{"model":"nope/gpt-4o",` + msgs + `}`, wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found", wantParam: "model"},
		{name: "model not offered by the route", body: `{"model":"openai/gpt-9",` + msgs + `}`, wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found", wantParam: "model"},
		{name: "missing key", key: "-", body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 401, wantType: "invalid_request_error", wantCode: "missing_api_key"},
		{name: "invalid key", key: "loom_notakey", body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "foreign key format", key: "sk-proj-abc", body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "revoked key", key: revokedRaw, body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "inactive tenant", key: inactiveRaw, body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 403, wantType: "permission_denied", wantCode: "tenant_inactive"},
		{name: "upstream timeout", body: `{"model":"slow/gpt-4o",` + msgs + `}`, wantStatus: 504, wantType: "timeout", wantCode: "upstream_timeout"},
		{name: "upstream unreachable", body: `{"model":"down/gpt-4o",` + msgs + `}`, wantStatus: 502, wantType: "upstream_error", wantCode: "upstream_unreachable"},
		{name: "upstream error passed through", body: `{"model":"gpt-4o",` + msgs + `}`, wantStatus: 401, wantBody: authErr},
		{name: "azure content filter passed through", body: `{"model":"azure/gpt-5-mini",` + msgs + `}`, wantStatus: 400, wantBody: filterErr},
		{name: "upstream error that is not JSON", body: `{"model":"html/x",` + msgs + `}`, wantStatus: 502, wantType: "upstream_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			switch key {
			case "":
				key = e.key
			case "-":
				key = ""
			}
			resp := e.post(t, key, tt.body)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tt.wantBody != nil {
				if diff := cmp.Diff(string(tt.wantBody), string(body)); diff != "" {
					t.Errorf("body (-upstream +client):\n%s", diff)
				}
				return
			}
			var eb errorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("not JSON: %s", body)
			}
			got := []string{eb.Error.Type, deref(eb.Error.Code), deref(eb.Error.Param)}
			if diff := cmp.Diff([]string{tt.wantType, tt.wantCode, tt.wantParam}, got); diff != "" {
				t.Errorf("type, code, param (-want +got):\n%s", diff)
			}
			if eb.Error.Message == "" || !bytes.Contains(body, []byte(`"param":`)) || !bytes.Contains(body, []byte(`"code":`)) {
				t.Errorf("error JSON lacks message, param or code: %s", body)
			}
		})
	}

	// Every authenticated request left a trace with its status, failures included.
	traces := e.traces(t, 16)
	byStatus := map[int]int{}
	for _, tr := range traces {
		byStatus[tr.Status]++
		if tr.TenantID != e.tenantID {
			t.Errorf("trace of tenant %q", tr.TenantID)
		}
	}
	want := map[int]int{400: 8, 413: 1, 404: 3, 504: 1, 502: 2, 401: 1}
	if diff := cmp.Diff(want, byStatus); diff != "" {
		t.Errorf("traces by status (-want +got):\n%s", diff)
	}
}

func mustRevoke(t *testing.T, e *env, keyID string) string {
	t.Helper()
	raw, k, err := e.gw.Admin().CreateKey(context.Background(), e.tenantID, "to-revoke")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Admin().RevokeKey(context.Background(), e.tenantID, k.ID); err != nil {
		t.Fatal(err)
	}
	return raw
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// An upstream that fails after the stream started: the client gets an error event and
// the stream ends; the SDK reports the error.
func TestErrorMidStream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"partial"},"finish_reason":null}]}`+"\n\n")
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close() // the upstream dies mid-stream
	}))
	defer up.Close()
	e := newEnv(t, []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL})}})
	resp := e.post(t, e.key, `{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	lines := readEvents(t, resp.Body)
	if len(lines) != 2 {
		t.Fatalf("events = %q", lines)
	}
	var eb errorBody
	if err := json.Unmarshal(bytes.TrimPrefix(lines[1], []byte("data: ")), &eb); err != nil || eb.Error.Type != "upstream_error" {
		t.Errorf("last event = %s, want an error event", lines[1])
	}

	s := e.client().Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "openai/gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	for s.Next() {
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "upstream_stream_interrupted") {
		t.Errorf("SDK error = %v, want the error event", err)
	}
	traces := e.traces(t, 2)
	if len(traces) != 2 || traces[0].ErrorType != "upstream_error" || traces[0].Status != 200 {
		t.Errorf("traces = %+v", traces)
	}
}

// Without include_usage the usage chunk never reaches the client, but the trace has it.
func TestUsageChunkStripped(t *testing.T) {
	body := fixture(t, "openai_chat_stream_include_usage.sse")
	up := newFakeUpstream(t, http.StatusOK, body)
	e := newEnv(t, []loom.Route{openAIRoute(up)})
	for _, tt := range []struct {
		name      string
		opts      string
		wantUsage bool
	}{
		{"not asked", ``, false},
		{"asked", `,"stream_options":{"include_usage":true}`, true},
		{"asked false", `,"stream_options":{"include_usage":false}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.post(t, e.key, `{"model":"gpt-4o","stream":true`+tt.opts+`,"messages":[{"role":"user","content":"hi"}]}`)
			got := readEvents(t, resp.Body)
			var want [][]byte
			for _, ev := range sseEvents(body) {
				c := provider.ReadCompletion(bytes.TrimPrefix(ev, []byte("data: ")))
				if c.Usage != nil && c.NoChoices && !tt.wantUsage {
					continue
				}
				want = append(want, ev)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestModels(t *testing.T) {
	up := newFakeUpstream(t, 200, nil)
	e := newEnv(t, []loom.Route{openAIRoute(up), {Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}})
	page, err := e.client().Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	// Each model once, under the id naming its route; bare names still route but are not
	// listed twice.
	want := []string{"openai/gpt-4o", "openai/gpt-4o-mini", "mock/mock-1"}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}

	tests := []struct {
		name, id  string
		wantOwner string // "" means 404 model_not_found
	}{
		{"prefixed", "openai/gpt-4o-mini", "openai"},
		{"bare alias", "mock-1", "mock"},
		{"unlisted on a listing route", "openai/gpt-3", ""},
		{"unknown", "nope", ""},
		{"NUL and invalid UTF-8", "mock/\x00\xff", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := e.client().Models.Get(context.Background(), tt.id)
			if tt.wantOwner == "" {
				var apiErr *openai.Error
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
					t.Fatalf("GET /v1/models/%q: %v, want 404 model_not_found", tt.id, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([2]string{tt.id, tt.wantOwner}, [2]string{m.ID, m.OwnedBy}); diff != "" {
				t.Errorf("model (-want +got):\n%s", diff)
			}
		})
	}
}

// The mock provider answers deterministically, streaming or not.
func TestMockProvider(t *testing.T) {
	e := newEnv(t, []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}})
	c := e.client()
	params := openai.ChatCompletionNewParams{Model: "mock-1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello loom")}}
	resp, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	want := provider.MockReply("hello loom")
	if got := resp.Choices[0].Message.Content; got != want {
		t.Errorf("content = %q, want %q", got, want)
	}
	s := c.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	if s.Err() != nil || acc.Choices[0].Message.Content != want {
		t.Errorf("streamed %q, err %v", acc.Choices[0].Message.Content, s.Err())
	}
	for _, tr := range e.traces(t, 2) {
		if tr.UsageSource != tracing.UsageReported || tr.CompletionTokens == 0 {
			t.Errorf("trace usage: %+v", tr)
		}
	}
}

// Revoking a key or deactivating a tenant takes effect on the next request, although the
// key's earlier success is cached.
func TestRevocationIsImmediate(t *testing.T) {
	e := newEnv(t, []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}})
	body := `{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}`
	ctx := context.Background()
	if resp := e.post(t, e.key, body); resp.StatusCode != 200 {
		t.Fatalf("status %d before revocation", resp.StatusCode)
	}
	if err := e.gw.Admin().RevokeKey(ctx, e.tenantID, e.keyID); err != nil {
		t.Fatal(err)
	}
	if resp := e.post(t, e.key, body); resp.StatusCode != 401 {
		t.Errorf("status %d after revocation, want 401", resp.StatusCode)
	}
	raw, _, err := e.gw.Admin().CreateKey(ctx, e.tenantID, "second")
	if err != nil {
		t.Fatal(err)
	}
	if resp := e.post(t, raw, body); resp.StatusCode != 200 {
		t.Fatalf("status %d with a new key", resp.StatusCode)
	}
	if err := e.gw.Admin().SetTenantStatus(ctx, e.tenantID, "inactive"); err != nil {
		t.Fatal(err)
	}
	if resp := e.post(t, raw, body); resp.StatusCode != 403 {
		t.Errorf("status %d after deactivation, want 403", resp.StatusCode)
	}
}

// A tenant's own provider configuration overrides the gateway's route of the same name
// for that tenant only, with its own upstream key, stored sealed.
func TestTenantProvider(t *testing.T) {
	body := fixture(t, "openai_chat_nonstream_usage.json")
	shared := newFakeUpstream(t, 200, body)
	own := newFakeUpstream(t, 200, body)
	e := newEnv(t, []loom.Route{openAIRoute(shared)})
	ctx := context.Background()
	err := e.gw.Admin().PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: e.tenantID, Name: "openai", Kind: "openai", BaseURL: own.URL + "/v1", Models: []string{"gpt-4o"}}, "sk-tenant-secret")
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := e.store.ListProviderConfigs(ctx, e.tenantID)
	if err != nil || len(cfgs) != 1 || bytes.Contains(cfgs[0].SealedAPIKey, []byte("sk-tenant-secret")) {
		t.Fatalf("stored configs = %+v, %v", cfgs, err)
	}
	other, _ := e.gw.Admin().CreateTenant(ctx, "other")
	otherKey, _, _ := e.gw.Admin().CreateKey(ctx, other.ID, "k")

	req := `{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	if resp := e.post(t, e.key, req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := own.lastCall(t).Header.Get("Authorization"); got != "Bearer sk-tenant-secret" {
		t.Errorf("tenant upstream auth = %q", got)
	}
	if resp := e.post(t, otherKey, req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := shared.lastCall(t).Header.Get("Authorization"); got != "Bearer sk-upstream" {
		t.Errorf("shared upstream auth = %q", got)
	}
	if len(shared.calls) != 1 || len(own.calls) != 1 {
		t.Errorf("calls: shared %d, tenant %d; want 1 each", len(shared.calls), len(own.calls))
	}
}

// The keys' last-used times reach the store in batches, off the request path: an unused
// key has none.
func TestKeyLastUsed(t *testing.T) {
	e := newEnv(t, []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		func(c *loom.Config) { c.KeyUsageInterval = 20 * time.Millisecond })
	ctx := context.Background()
	_, idle, err := e.gw.Admin().CreateKey(ctx, e.tenantID, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if resp := e.post(t, e.key, `{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	lastUsed := func() map[string]bool {
		keys, err := e.store.ListKeys(ctx, e.tenantID)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, k := range keys {
			m[k.ID] = k.LastUsedAt != nil
		}
		return m
	}
	var got map[string]bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = lastUsed(); got[e.keyID] {
			break
		}
	}
	if diff := cmp.Diff(map[string]bool{e.keyID: true, idle.ID: false}, got); diff != "" {
		t.Errorf("keys with a last-used time (-want +got):\n%s", diff)
	}
}

// Wrong methods and unknown paths get OpenAI error JSON too, not the mux's plain text.
func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantCode           string
	}{
		{"GET chat completions", http.MethodGet, "/v1/chat/completions", 405, "method_not_allowed"},
		{"DELETE models", http.MethodDelete, "/v1/models", 405, "method_not_allowed"},
		{"DELETE a model", http.MethodDelete, "/v1/models/mock/mock-1", 405, "method_not_allowed"},
		{"unknown path", http.MethodPost, "/v1/completions", 404, "unknown_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, nil)
			req.Header.Set("Authorization", "Bearer "+e.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb errorBody
			if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if resp.StatusCode != tt.wantStatus || deref(eb.Error.Code) != tt.wantCode || eb.Error.Message == "" {
				t.Errorf("status %d, error %+v; want %d %s", resp.StatusCode, eb.Error, tt.wantStatus, tt.wantCode)
			}
		})
	}
}
