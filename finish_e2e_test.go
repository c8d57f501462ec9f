package loom_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// finishUpstream answers each request with the body named by the request's model (the
// model the route sends upstream), replayed as recorded: JSON whole, SSE event by event
// with a flush after each. It serves OpenAI's and Anthropic's paths alike.
func finishUpstream(t *testing.T, bodies map[string][]byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
		}
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &req)
		body, ok := bodies[req.Model]
		if !ok {
			http.Error(w, `{"error":{"message":"unknown test model","type":"invalid_request_error"}}`, http.StatusNotFound)
			return
		}
		if bytes.HasPrefix(body, []byte("data:")) || bytes.HasPrefix(body, []byte("event:")) {
			w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
			for _, ev := range sseEvents(body) {
				w.Write(append(ev, "\n\n"...))
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// storedFinish returns the finish_reasons column and fields_cut of trace id, once stored.
func storedFinish(t *testing.T, e *sinkEnv, id string) (reasons []string, cut bool) {
	t.Helper()
	q := `SELECT finish_reasons, fields_cut FROM traces WHERE CAST(id AS TEXT) = ?`
	if e.dialect == migrations.Postgres {
		q = `SELECT array_to_json(finish_reasons)::text, fields_cut FROM traces WHERE CAST(id AS TEXT) = $1`
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e.flush(t)
		var raw string
		err := e.db.QueryRowContext(context.Background(), q, id).Scan(&raw, &cut)
		if err == nil {
			if err := json.Unmarshal([]byte(raw), &reasons); err != nil || reasons == nil {
				t.Fatalf("finish_reasons %q is not a JSON array: %v", raw, err)
			}
			return reasons, cut
		}
		if err != sql.ErrNoRows || time.Now().After(deadline) {
			t.Fatalf("trace %s not stored: %v", id, err)
		}
	}
}

// listedTrace returns trace id as GET /v1/traces lists it and as GET /v1/traces/{id} shows it.
func listedTrace(t *testing.T, e *sinkEnv, id string) (listed, detail analytics.Trace) {
	t.Helper()
	get := func(path string, v any) {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var page analytics.ListPage
	get("/v1/traces?limit=200", &page)
	for _, tr := range page.Data {
		if tr.ID == id {
			listed = tr
		}
	}
	if listed.ID == "" {
		t.Fatalf("trace %s not in GET /v1/traces", id)
	}
	get("/v1/traces/"+id, &detail)
	return listed, detail
}

// chatFinish sends one request through the official SDK, streamed or not, reading the answer
// to its end, and returns the answer's finish reasons as the client saw them and the
// trace id.
func chatFinish(t *testing.T, e *sinkEnv, model string, stream bool) (seen []string, id string) {
	t.Helper()
	c := e.client()
	params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	var hr *http.Response
	ctx := context.Background()
	if !stream {
		resp, err := c.Chat.Completions.New(ctx, params, option.WithResponseInto(&hr))
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range resp.Choices {
			seen = append(seen, ch.FinishReason)
		}
		return seen, hr.Header.Get("X-Request-Id")
	}
	st := c.Chat.Completions.NewStreaming(ctx, params, option.WithResponseInto(&hr))
	for st.Next() {
		for _, ch := range st.Current().Choices {
			if ch.FinishReason != "" {
				seen = append(seen, ch.FinishReason)
			}
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	return seen, hr.Header.Get("X-Request-Id")
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// withStop returns a recorded Anthropic answer with its stop_reason replaced.
func withStop(t *testing.T, name, stop string) []byte {
	t.Helper()
	b := fixture(t, name)
	const rec = `"stop_reason":"tool_use"`
	if bytes.Count(b, []byte(rec)) != 1 {
		t.Fatalf("%s: no single %s to replace", name, rec)
	}
	return bytes.Replace(b, []byte(rec), []byte(`"stop_reason":"`+stop+`"`), 1)
}

// choicesBody is an OpenAI chat completion with one choice per finish reason.
func choicesBody(reasons ...string) []byte {
	var cs []string
	for i, r := range reasons {
		cs = append(cs, fmt.Sprintf(`{"index":%d,"message":{"role":"assistant","content":"c%d"},"logprobs":null,"finish_reason":%s}`, i, i, r))
	}
	return []byte(`{"id":"chatcmpl-n","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[` +
		strings.Join(cs, ",") + `],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
}

// choicesStream is an OpenAI stream in which choice i finishes with reasons[i], in the
// order given by finishOrder.
func choicesStream(reasons []string, finishOrder []int) []byte {
	var b strings.Builder
	chunk := func(choices string) {
		fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[%s]}\n\n", choices)
	}
	for i := range reasons {
		chunk(fmt.Sprintf(`{"index":%d,"delta":{"role":"assistant","content":"c%d"},"logprobs":null,"finish_reason":null}`, i, i))
	}
	for _, i := range finishOrder {
		chunk(fmt.Sprintf(`{"index":%d,"delta":{},"logprobs":null,"finish_reason":%s}`, i, reasons[i]))
	}
	b.WriteString("data: [DONE]\n\n")
	return []byte(b.String())
}

// TestFinishReasonsEndToEnd: the recorded answers of OpenAI and Anthropic (mapped to the
// OpenAI reasons the client sees), streamed and not, through the real handler with the
// official SDK; each trace's finish reasons are stored in PostgreSQL and SQLite, in choice
// order and each once, and listed by the analytics API. Hostile reasons from an upstream
// are stored cut and repaired, with the trace marked.
func TestFinishReasonsEndToEnd(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	many := make([]string, 20)
	for i := range many {
		many[i] = fmt.Sprintf(`"r%02d"`, i)
	}
	// Answers no recording holds are made from recorded ones: an Anthropic answer that
	// ended its turn or ran out of tokens differs from the recorded tool use only in its
	// stop_reason, an OpenAI stream cut by length only in its finish_reason.
	lengthStream := bytes.Replace(fixture(t, "openai_chat_stream_include_usage.sse"),
		[]byte(`"finish_reason":"stop"`), []byte(`"finish_reason":"length"`), 1)
	bodies := map[string][]byte{
		"oa-stop":          fixture(t, "openai_chat_nonstream_usage.json"),
		"oa-length":        fixture(t, "openai_chat_reasoning_length_empty_content.json"),
		"oa-tools":         fixture(t, "openai_chat_nonstream_tool_calls_parallel.json"),
		"oa-stop-sse":      fixture(t, "openai_chat_stream_include_usage.sse"),
		"oa-length-sse":    lengthStream,
		"oa-tools-sse":     fixture(t, "openai_chat_stream_tool_calls_parallel.sse"),
		"az-filters":       fixture(t, "azure_chat_nonstream_filters.json"),
		"an-tools":         fixture(t, "anthropic_messages_tool_use.json"),
		"an-end":           withStop(t, "anthropic_messages_tool_use.json", "end_turn"),
		"an-max":           withStop(t, "anthropic_messages_tool_use.json", "max_tokens"),
		"an-tools-sse":     fixture(t, "anthropic_messages_stream_tool_use.sse"),
		"an-end-sse":       withStop(t, "anthropic_messages_stream_tool_use.sse", "end_turn"),
		"an-max-sse":       withStop(t, "anthropic_messages_stream_tool_use.sse", "max_tokens"),
		"n-choices":        choicesBody(`"length"`, `"stop"`, `"length"`, `"tool_calls"`),
		"n-choices-sse":    choicesStream([]string{`"stop"`, `"length"`, `"stop"`}, []int{2, 1, 0}),
		"huge":             choicesBody(`"` + huge + `"`),
		"huge-sse":         choicesStream([]string{`"` + huge + `"`}, []int{0}),
		"invalid-utf8":     choicesBody("\"stop\xff\xfe\"", `"nul\u0000here"`, "\"<script>alert(1)</script>\""),
		"invalid-utf8-sse": choicesStream([]string{"\"len\xc3\"", `"a\u0000"`}, []int{1, 0}),
		"many":             choicesBody(many...),
		"many-sse":         choicesStream(many, []int{19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}),
		"no-finish-sse":    []byte("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n"),
	}
	cut := strings.Repeat("x", tracing.MaxFinishReasonBytes)
	var manyWant []string
	for i := range tracing.MaxFinishReasons {
		manyWant = append(manyWant, fmt.Sprintf("r%02d", i))
	}
	tests := []struct {
		model   string
		stream  bool
		want    []string
		wantCut bool
	}{
		{model: "openai/oa-stop", want: []string{"stop"}},
		{model: "openai/oa-length", want: []string{"length"}},
		{model: "openai/oa-tools", want: []string{"tool_calls"}},
		{model: "openai/oa-stop-sse", stream: true, want: []string{"stop"}},
		{model: "openai/oa-length-sse", stream: true, want: []string{"length"}},
		{model: "openai/oa-tools-sse", stream: true, want: []string{"tool_calls"}},
		{model: "openai/az-filters", want: []string{"stop"}},
		{model: "anthropic/an-tools", want: []string{"tool_calls"}},
		{model: "anthropic/an-end", want: []string{"stop"}},
		{model: "anthropic/an-max", want: []string{"length"}},
		{model: "anthropic/an-tools-sse", stream: true, want: []string{"tool_calls"}},
		{model: "anthropic/an-end-sse", stream: true, want: []string{"stop"}},
		{model: "anthropic/an-max-sse", stream: true, want: []string{"length"}},
		{model: "openai/n-choices", want: []string{"length", "stop", "tool_calls"}},
		{model: "openai/n-choices-sse", stream: true, want: []string{"stop", "length"}},
		{model: "openai/no-finish-sse", stream: true, want: []string{}},
		{model: "openai/huge", want: []string{cut}, wantCut: true},
		{model: "openai/huge-sse", stream: true, want: []string{cut}, wantCut: true},
		{model: "openai/invalid-utf8", want: []string{"stop\uFFFD", "nul\uFFFDhere", "<script>alert(1)</script>"}, wantCut: true},
		{model: "openai/invalid-utf8-sse", stream: true, want: []string{"len\uFFFD", "a\uFFFD"}, wantCut: true},
		{model: "openai/many", want: manyWant, wantCut: true},
		{model: "openai/many-sse", stream: true, want: manyWant, wantCut: true},
	}
	up := finishUpstream(t, bodies)
	routes := []loom.Route{
		{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL + "/v1", APIKey: "sk-up"})},
		{Name: "anthropic", Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: up.URL, APIKey: "k"})},
	}
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			e := newSinkEnv(t, dialect, routes)
			for _, tt := range tests {
				t.Run(strings.TrimPrefix(strings.TrimPrefix(tt.model, "openai/"), "anthropic/"), func(t *testing.T) {
					seen, id := chatFinish(t, e, tt.model, tt.stream)
					if !tt.wantCut {
						// The client saw the same reasons (once per choice, in arrival order).
						distinct := []string{}
						for _, r := range seen {
							if !slices.Contains(distinct, r) {
								distinct = append(distinct, r)
							}
						}
						if diff := cmp.Diff(sorted(tt.want), sorted(distinct)); diff != "" {
							t.Errorf("the client saw other reasons (-stored +seen):\n%s", diff)
						}
					}
					reasons, fieldsCut := storedFinish(t, e, id)
					if diff := cmp.Diff(tt.want, reasons); diff != "" {
						t.Errorf("stored finish_reasons (-want +got):\n%s", diff)
					}
					if fieldsCut != tt.wantCut {
						t.Errorf("fields_cut = %v, want %v", fieldsCut, tt.wantCut)
					}
					listed, detail := listedTrace(t, e, id)
					if diff := cmp.Diff(tt.want, listed.FinishReasons); diff != "" {
						t.Errorf("GET /v1/traces finish_reasons (-want +got):\n%s", diff)
					}
					if diff := cmp.Diff(tt.want, detail.FinishReasons); diff != "" {
						t.Errorf("GET /v1/traces/{id} finish_reasons (-want +got):\n%s", diff)
					}
				})
			}
		})
	}
}
