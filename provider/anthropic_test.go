package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom/internal/sse"
)

func anthropicFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonValue decodes b for a comparison that ignores member order and spacing.
func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

func TestAnthropicRequestBody(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		model     string
		stream    bool
		maxTokens int
		want      string
		wantUsage bool
	}{
		{
			// The request of the recorded fixtures, as an OpenAI client would send it (the
			// recording's cache_control has no OpenAI equivalent).
			name:  "recorded tool request",
			model: "claude-sonnet-4-0", maxTokens: 4096,
			in: `{"model":"claude-sonnet-4-0","max_completion_tokens":16000,"messages":[
				{"role":"system","content":"Use parallel tool calling."},
				{"role":"user","content":"Please retrieve the secrets associated with each of these passwords: mellon,radiance"}],
				"tools":[{"type":"function","function":{"name":"secret_retrieval_tool","description":"A tool that requires a password to retrieve a secret.",
				"parameters":{"properties":{"password":{"title":"Password","type":"string"}},"required":["password"],"additionalProperties":false,"type":"object"}}}]}`,
			want: `{"max_tokens":16000,"messages":[{"role":"user","content":[{"type":"text","text":"Please retrieve the secrets associated with each of these passwords: mellon,radiance"}]}],
				"model":"claude-sonnet-4-0","system":"Use parallel tool calling.",
				"tools":[{"name":"secret_retrieval_tool","description":"A tool that requires a password to retrieve a secret.",
				"input_schema":{"properties":{"password":{"title":"Password","type":"string"}},"required":["password"],"additionalProperties":false,"type":"object"}}]}`,
		},
		{
			name:  "stream with usage, default max_tokens",
			model: "claude-3-5-haiku-latest", stream: true, maxTokens: 4096,
			in:        `{"model":"anthropic/claude-3-5-haiku-latest","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			want:      `{"model":"claude-3-5-haiku-latest","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
			wantUsage: true,
		},
		{
			name:  "max_tokens, sampling, stop string, user",
			model: "m", maxTokens: 4096,
			in:   `{"model":"m","max_tokens":50,"temperature":0.2,"top_p":0.9,"stop":"END","user":"u-1","messages":[{"role":"user","content":"hi"}]}`,
			want: `{"model":"m","max_tokens":50,"temperature":0.2,"top_p":0.9,"stop_sequences":["END"],"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
		{
			name:  "max_completion_tokens wins, stop array",
			model: "m", maxTokens: 100,
			in:   `{"model":"m","max_tokens":50,"max_completion_tokens":70,"stop":["a","b"],"messages":[{"role":"user","content":"hi"}]}`,
			want: `{"model":"m","max_tokens":70,"stop_sequences":["a","b"],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
		{
			name:  "system and developer joined, text parts, consecutive users merged",
			model: "m", maxTokens: 10,
			in: `{"model":"m","messages":[
				{"role":"system","content":"Be brief."},
				{"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
				{"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
				{"role":"user","content":"three"}]}`,
			want: `{"model":"m","max_tokens":10,"system":"Be brief.\n\nAnswer in French.","messages":[{"role":"user","content":[
				{"type":"text","text":"one"},{"type":"text","text":"two"},{"type":"text","text":"three"}]}]}`,
		},
		{
			name:  "tool call round trip: tool_use, merged tool_results, then text",
			model: "m", maxTokens: 10,
			in: `{"model":"m","messages":[
				{"role":"user","content":"secrets for mellon and radiance"},
				{"role":"assistant","content":"Retrieving.","tool_calls":[
					{"id":"toolu_1","type":"function","function":{"name":"secret_retrieval_tool","arguments":"{\"password\": \"mellon\"}"}},
					{"id":"toolu_2","type":"function","function":{"name":"secret_retrieval_tool","arguments":""}}]},
				{"role":"tool","tool_call_id":"toolu_1","content":"Welcome to Moria!"},
				{"role":"tool","tool_call_id":"toolu_2","content":[{"type":"text","text":"Life before Death."}]},
				{"role":"user","content":"And now?"},
				{"role":"assistant","content":null,"tool_calls":[{"id":"toolu_3","type":"function","function":{"name":"t","arguments":"{}"}}]}]}`,
			want: `{"model":"m","max_tokens":10,"messages":[
				{"role":"user","content":[{"type":"text","text":"secrets for mellon and radiance"}]},
				{"role":"assistant","content":[{"type":"text","text":"Retrieving."},
					{"type":"tool_use","id":"toolu_1","name":"secret_retrieval_tool","input":{"password":"mellon"}},
					{"type":"tool_use","id":"toolu_2","name":"secret_retrieval_tool","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Welcome to Moria!"},
					{"type":"tool_result","tool_use_id":"toolu_2","content":"Life before Death."},
					{"type":"text","text":"And now?"}]},
				{"role":"assistant","content":[{"type":"tool_use","id":"toolu_3","name":"t","input":{}}]}]}`,
		},
		{
			name:  "images",
			model: "m", maxTokens: 10,
			in: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"What do you see?"},
				{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"low"}}]}]}`,
			want: `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"What do you see?"},
				{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}},
				{"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}}]}]}`,
		},
		{
			name:  "tool without parameters, tool_choice required",
			model: "m", maxTokens: 10,
			in:   `{"model":"m","tool_choice":"required","tools":[{"type":"function","function":{"name":"now"}}],"messages":[{"role":"user","content":"time?"}]}`,
			want: `{"model":"m","max_tokens":10,"tool_choice":{"type":"any"},"tools":[{"name":"now","input_schema":{"type":"object","properties":{}}}],"messages":[{"role":"user","content":[{"type":"text","text":"time?"}]}]}`,
		},
		{
			name:  "tool_choice auto",
			model: "m", maxTokens: 10,
			in:   `{"model":"m","tool_choice":"auto","messages":[{"role":"user","content":"x"}]}`,
			want: `{"model":"m","max_tokens":10,"tool_choice":{"type":"auto"},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
		{
			name:  "tool_choice none",
			model: "m", maxTokens: 10,
			in:   `{"model":"m","tool_choice":"none","messages":[{"role":"user","content":"x"}]}`,
			want: `{"model":"m","max_tokens":10,"tool_choice":{"type":"none"},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
		{
			name:  "tool_choice function, parallel tool calls off",
			model: "m", maxTokens: 10,
			in: `{"model":"m","parallel_tool_calls":false,"tool_choice":{"type":"function","function":{"name":"now"}},
				"tools":[{"type":"function","function":{"name":"now","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"x"}]}`,
			want: `{"model":"m","max_tokens":10,"tool_choice":{"type":"tool","name":"now","disable_parallel_tool_use":true},
				"tools":[{"name":"now","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
		{
			name:  "empty assistant turn dropped",
			model: "m", maxTokens: 10,
			in:   `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":""},{"role":"user","content":"b"}]}`,
			want: `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, usage, err := anthropicRequestBody([]byte(tt.in), tt.model, tt.stream, tt.maxTokens)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(jsonValue(t, []byte(tt.want)), jsonValue(t, got)); diff != "" {
				t.Errorf("anthropic request (-want +got):\n%s", diff)
			}
			if usage != tt.wantUsage {
				t.Errorf("include_usage = %v, want %v", usage, tt.wantUsage)
			}
		})
	}
}

func TestAnthropicRequestBodyInvalid(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantParam string
	}{
		{"n above one", `{"n":2,"messages":[{"role":"user","content":"x"}]}`, "n"},
		{"arguments not an object", `{"messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"[1]"}}]}]}`, "messages"},
		{"unknown role", `{"messages":[{"role":"function","content":"x"}]}`, "messages"},
		{"audio part", `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}`, "messages"},
		{"image in a system message", `{"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x"}}]},{"role":"user","content":"x"}]}`, "messages"},
		{"no conversation", `{"messages":[{"role":"system","content":"x"}]}`, "messages"},
		{"stop of the wrong type", `{"stop":3,"messages":[{"role":"user","content":"x"}]}`, "stop"},
		{"tool of another type", `{"tools":[{"type":"custom"}],"messages":[{"role":"user","content":"x"}]}`, "tools"},
		{"unknown tool_choice", `{"tool_choice":"sometimes","messages":[{"role":"user","content":"x"}]}`, "tool_choice"},
		{"wrong types", `{"messages":"x"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := anthropicRequestBody([]byte(tt.in), "m", false, 10)
			var ie *InvalidRequestError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want an *InvalidRequestError", err)
			}
			if ie.Param != tt.wantParam {
				t.Errorf("param = %q, want %q (%s)", ie.Param, tt.wantParam, ie.Message)
			}
		})
	}
}

func TestAnthropicCompletion(t *testing.T) {
	got, _, err := anthropicCompletion(anthropicFixture(t, "anthropic_messages_tool_use.json"), 1766100751)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"msg_018DaxGuCtuQ42XfuFiC1wxo","object":"chat.completion","created":1766100751,"model":"claude-sonnet-4-20250514",
		"choices":[{"index":0,"message":{"role":"assistant","content":"I'll retrieve the secrets for both passwords you provided.","refusal":null,
		"tool_calls":[{"id":"toolu_01BUvqBj8Yb34pNAbCJJY1oc","type":"function","function":{"name":"secret_retrieval_tool","arguments":"{\"password\":\"mellon\"}"}},
		{"id":"toolu_01VPuQJ1LonDBYXrr8pqPkqQ","type":"function","function":{"name":"secret_retrieval_tool","arguments":"{\"password\":\"radiance\"}"}}]},
		"logprobs":null,"finish_reason":"tool_calls"}],
		"usage":{"prompt_tokens":416,"completion_tokens":109,"total_tokens":525,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`
	if diff := cmp.Diff(jsonValue(t, []byte(want)), jsonValue(t, got)); diff != "" {
		t.Errorf("chat completion (-want +got):\n%s", diff)
	}
}

func TestAnthropicCompletionStopAndCache(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantFinish string
		wantUsage  [4]int64 // prompt, completion, total, cached
		wantText   *string
	}{
		{"end_turn with cache", `{"id":"m","model":"c","stop_reason":"end_turn","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
			"usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":3}}`,
			"stop", [4]int64{115, 3, 118, 100}, new("ab")},
		{"stop_sequence", `{"stop_reason":"stop_sequence","content":[{"type":"text","text":"x"}],"usage":{"input_tokens":1,"output_tokens":1}}`,
			"stop", [4]int64{1, 1, 2, 0}, new("x")},
		{"max_tokens", `{"stop_reason":"max_tokens","content":[{"type":"text","text":"x"}],"usage":{"input_tokens":1,"output_tokens":1}}`,
			"length", [4]int64{1, 1, 2, 0}, new("x")},
		{"thinking only is no content", `{"stop_reason":"refusal","content":[{"type":"thinking","thinking":"hmm"}],"usage":{}}`,
			"content_filter", [4]int64{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, err := anthropicCompletion([]byte(tt.in), 1)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Choices []struct {
					Message struct {
						Content *string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					PromptTokens     int64 `json:"prompt_tokens"`
					CompletionTokens int64 `json:"completion_tokens"`
					TotalTokens      int64 `json:"total_tokens"`
					Details          struct {
						CachedTokens int64 `json:"cached_tokens"`
					} `json:"prompt_tokens_details"`
				} `json:"usage"`
			}
			json.Unmarshal(b, &got)
			if got.Choices[0].FinishReason != tt.wantFinish {
				t.Errorf("finish_reason = %q, want %q", got.Choices[0].FinishReason, tt.wantFinish)
			}
			u := got.Usage
			if diff := cmp.Diff(tt.wantUsage, [4]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.Details.CachedTokens}); diff != "" {
				t.Errorf("usage (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantText, got.Choices[0].Message.Content); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
			if u := ReadCompletion(b).Usage; u == nil || u.PromptTokens != tt.wantUsage[0] {
				t.Errorf("Loom's own reader sees usage %+v", u)
			}
		})
	}
}

// translate reads a whole translated stream.
func translate(t *testing.T, upstream string, includeUsage bool) (string, error) {
	t.Helper()
	s := &anthropicStream{body: io.NopCloser(strings.NewReader(upstream)), created: 1766100767, includeUsage: includeUsage, tools: map[int]*streamTool{}}
	s.events = sse.NewReader(s.body)
	b, err := io.ReadAll(s)
	return string(b), err
}

func TestAnthropicStreamFixture(t *testing.T) {
	const head = `data: {"id":"msg_013zKrzHmx2EAPhcF2gQKQ4k","object":"chat.completion.chunk","created":1766100767,"model":"claude-sonnet-4-20250514","choices":[{"index":0,`
	want := head + `"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"content":"I"},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"content":"'ll retrieve the secrets for"},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"content":" both passwords you"},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"content":" provided."},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":0,"id":"toolu_015cUijgET79LXjgeYQerN2h","type":"function","function":{"name":"secret_retrieval_tool","arguments":""}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"passwo"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"rd\": \"mellon"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"}"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":1,"id":"toolu_01XZTimPexA7h3EVKesnKt5T","type":"function","function":{"name":"secret_retrieval_tool","arguments":""}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"passw"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":1,"function":{"arguments":"ord"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\": \"radian"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{"tool_calls":[{"index":1,"function":{"arguments":"ce\"}"}}]},"logprobs":null,"finish_reason":null}]}

` + head + `"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}

data: {"id":"msg_013zKrzHmx2EAPhcF2gQKQ4k","object":"chat.completion.chunk","created":1766100767,"model":"claude-sonnet-4-20250514","choices":[],"usage":{"prompt_tokens":416,"completion_tokens":109,"total_tokens":525,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

`
	got, err := translate(t, string(anthropicFixture(t, "anthropic_messages_stream_tool_use.sse")), true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("translated stream (-want +got):\n%s", diff)
	}

	// Without include_usage, the same stream lacks only the usage chunk.
	got, err = translate(t, string(anthropicFixture(t, "anthropic_messages_stream_tool_use.sse")), false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, `"usage"`) || !strings.HasSuffix(got, "\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n") {
		t.Errorf("stream without usage:\n%s", got)
	}
}

func TestAnthropicStreamEvents(t *testing.T) {
	const start = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":90,\"output_tokens\":1}}}\r\n\r\n"
	tests := []struct {
		name    string
		in      string
		want    []string // data payloads after the role chunk
		wantErr error
	}{
		{
			name: "cumulative usage is replaced, cache kept",
			in: start + ": a comment\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n" +
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":5}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7}}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			want: []string{
				`{"id":"msg_1","object":"chat.completion.chunk","created":1766100767,"model":"c","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"msg_1","object":"chat.completion.chunk","created":1766100767,"model":"c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}`,
				`{"id":"msg_1","object":"chat.completion.chunk","created":1766100767,"model":"c","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,"prompt_tokens_details":{"cached_tokens":90},"completion_tokens_details":{"reasoning_tokens":0}}}`,
				`[DONE]`,
			},
		},
		{
			name: "error mid-stream",
			in: start + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
				"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			want: []string{
				`{"id":"msg_1","object":"chat.completion.chunk","created":1766100767,"model":"c","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}`,
				`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}`,
			},
		},
		{
			name:    "cut short before message_stop",
			in:      start + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}",
			want:    []string{`{"id":"msg_1","object":"chat.completion.chunk","created":1766100767,"model":"c","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}`},
			wantErr: io.ErrUnexpectedEOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := translate(t, tt.in, true)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			var data []string
			for i, ev := range strings.SplitAfter(got, "\n\n") {
				if i == 0 || ev == "" {
					continue // the role chunk
				}
				if !strings.HasPrefix(ev, "data: ") || !strings.HasSuffix(ev, "\n\n") {
					t.Errorf("malformed event %q", ev)
				}
				data = append(data, strings.TrimSuffix(strings.TrimPrefix(ev, "data: "), "\n\n"))
			}
			if diff := cmp.Diff(tt.want, data); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAnthropicChat(t *testing.T) {
	var gotHeader http.Header
	var gotPath string
	var gotBody map[string]any
	status, answer := http.StatusOK, anthropicFixture(t, "anthropic_messages_tool_use.json")
	var header http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader, gotPath = r.Header.Clone(), r.URL.Path
		b, _ := io.ReadAll(r.Body)
		gotBody = nil
		json.Unmarshal(b, &gotBody)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(answer)
	}))
	defer up.Close()
	p := NewAnthropic(AnthropicConfig{BaseURL: up.URL + "/", APIKey: "sk-ant-test", Version: "2099-01-01", ClientHeaders: []string{"anthropic-beta"},
		Now: func() time.Time { return time.Unix(1766100751, 0) }})
	ctx := context.Background()
	reqBody := `{"model":"claude-sonnet-4-0","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}`

	header = http.Header{"Anthropic-Ratelimit-Requests-Remaining": {"49"}}
	resp, err := p.Chat(ctx, &Request{Model: "claude-sonnet-4-0", Body: []byte(reqBody), Header: http.Header{"Anthropic-Beta": {"b1"}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if c := ReadCompletion(b); string(c.Model) != "claude-sonnet-4-20250514" || c.Usage == nil || c.Usage.CompletionTokens != 109 {
		t.Errorf("answer = %s", b)
	}
	if resp.ContentLength != int64(len(b)) || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "49" {
		t.Errorf("content length %d, header %v", resp.ContentLength, resp.Header)
	}
	got := []string{gotPath, gotHeader.Get("X-Api-Key"), gotHeader.Get("Anthropic-Version"), gotHeader.Get("Content-Type"), gotHeader.Get("Anthropic-Beta"), gotBody["system"].(string)}
	if diff := cmp.Diff([]string{"/v1/messages", "sk-ant-test", "2099-01-01", "application/json", "b1", "Be brief."}, got); diff != "" {
		t.Errorf("upstream request: path, key, version, content type, beta, system (-want +got):\n%s", diff)
	}
	if gotBody["max_tokens"] != float64(4096) {
		t.Errorf("max_tokens = %v", gotBody["max_tokens"])
	}

	errTests := []struct {
		name       string
		status     int
		body       []byte
		header     http.Header
		wantStatus int
		wantBody   string
		wantRetry  string
	}{
		{"401", 401, anthropicFixture(t, "anthropic_error_401_authentication.json"), nil, 401,
			`{"error":{"message":"invalid x-api-key","type":"authentication_error","param":null,"code":null}}`, ""},
		{"529 overloaded", 529, anthropicFixture(t, "anthropic_error_529_overloaded.json"), nil, 503,
			`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}`, "1"},
		{"429 keeps retry-after", 429, []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`), http.Header{"Retry-After": {"17"}}, 429,
			`{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}`, "17"},
		{"not JSON passes as is", 502, []byte("<html>bad gateway</html>"), nil, 502, "<html>bad gateway</html>", ""},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			status, answer, header = tt.status, tt.body, tt.header
			_, err := p.Chat(ctx, &Request{Model: "claude-sonnet-4-0", Body: []byte(reqBody)})
			var ue *UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want an *UpstreamError", err)
			}
			got := []string{http.StatusText(ue.StatusCode), string(ue.Body), ue.Header.Get("Retry-After")}
			if diff := cmp.Diff([]string{http.StatusText(tt.wantStatus), tt.wantBody, tt.wantRetry}, got); diff != "" {
				t.Errorf("status, body, Retry-After (-want +got):\n%s", diff)
			}
		})
	}

	// A request Anthropic cannot take never leaves.
	gotPath = ""
	_, err = p.Chat(ctx, &Request{Model: "m", Body: []byte(`{"n":3,"messages":[{"role":"user","content":"x"}]}`)})
	var ie *InvalidRequestError
	if !errors.As(err, &ie) || gotPath != "" {
		t.Errorf("err = %v, upstream path %q", err, gotPath)
	}
}

// The stream is translated as it arrives: the first chunk is readable while the upstream
// still holds the rest back, and a context that ends fails the read.
func TestAnthropicStreamIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(20 * time.Second): // deadlock guard
		}
	}))
	defer up.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewAnthropic(AnthropicConfig{BaseURL: up.URL, APIKey: "k"})
	resp, err := p.Chat(ctx, &Request{Model: "c", Stream: true, Body: []byte(`{"model":"c","stream":true,"messages":[{"role":"user","content":"x"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if err != nil || !bytes.Contains(buf[:n], []byte(`"role":"assistant"`)) {
		t.Fatalf("first read = %q, %v", buf[:n], err)
	}
	cancel()
	if _, err := resp.Body.Read(buf); err == nil {
		t.Error("a read after the context ended succeeded")
	}
}

// A stream read to its end leaves the upstream connection reusable: after message_stop
// the adapter reads the upstream response to its end.
func TestAnthropicStreamReusesConnection(t *testing.T) {
	sse := anthropicFixture(t, "anthropic_messages_stream_tool_use.sse")
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range bytes.SplitAfter(sse, []byte("\n\n")) {
			w.Write(ev)
			w.(http.Flusher).Flush()
		}
		time.Sleep(20 * time.Millisecond) // the end of the response comes after message_stop
	}, false)
	p := NewAnthropic(AnthropicConfig{BaseURL: srv.URL, APIKey: "k"})
	for range 3 {
		resp, err := p.Chat(context.Background(), &Request{Model: "c", Stream: true,
			Body: []byte(`{"model":"c","stream":true,"messages":[{"role":"user","content":"x"}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
			t.Fatalf("stream = %q, %v", b, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 streams, want 1", n)
	}
}
