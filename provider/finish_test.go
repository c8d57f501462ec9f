package provider

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFinishReasons(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string // bodies or stream chunks, in arrival order
		want   []string
	}{
		{name: "one choice", chunks: []string{`{"choices":[{"index":0,"message":{},"finish_reason":"stop"}]}`}, want: []string{"stop"}},
		{name: "null until the end", chunks: []string{
			`{"choices":[{"index":0,"delta":{"content":"finish_reason"},"finish_reason":null}]}`,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
			`{"choices":[],"usage":{"prompt_tokens":1}}`,
		}, want: []string{"length"}},
		{name: "several choices, distinct, in choice order", chunks: []string{
			`{"choices":[{"index":2,"delta":{},"finish_reason":"length"}]}`,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}`,
			`{"choices":[{"index":3,"delta":{},"finish_reason":"tool_calls"}]}`,
		}, want: []string{"stop", "length", "tool_calls"}},
		{name: "a body's choices", chunks: []string{
			`{"choices":[{"index":0,"finish_reason":"content_filter"},{"index":1,"finish_reason":"stop"},{"index":2,"finish_reason":"content_filter"}]}`,
		}, want: []string{"content_filter", "stop"}},
		{name: "a later choice finishes, spaced", chunks: []string{
			`{"choices":[{"content_filter_results":{"hate":{"filtered":false}},"index":0,"delta":{"content":"a_reason\" \"finish_reason\":\"x"},"finish_reason":null},{"index":1,"finish_reason" : "stop"}]}`,
		}, want: []string{"stop"}},
		{name: "no index: array order", chunks: []string{`{"choices":[{"finish_reason":"b"},{"finish_reason":"a"}]}`}, want: []string{"b", "a"}},
		{name: "escaped", chunks: []string{`{"choices":[{"index":0,"finish_reason":"to\u006fl_calls"}]}`}, want: []string{"tool_calls"}},
		{name: "not strings", chunks: []string{`{"choices":[{"index":0,"finish_reason":7},{"index":1,"finish_reason":{"x":"y"}},{"index":2,"finish_reason":""},{"index":3,"finish_reason":null}]}`}},
		{name: "choices not an array", chunks: []string{`{"choices":{"finish_reason":"stop"}}`, `{"choices":"finish_reason"}`}},
		{name: "broken choices", chunks: []string{`{"choices":[}"finish_reason"]}`, `{"choices":[{"finish_reason":"stop"`}, want: []string{"stop"}},
		{name: "no choices", chunks: []string{`{"error":{"message":"finish_reason"}}`, `not json`}},
		{name: "megabytes", chunks: []string{`{"choices":[{"index":0,"finish_reason":"` + strings.Repeat("x", 1<<20) + `"}]}`},
			want: []string{strings.Repeat("x", maxFinishReasonBytes)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f FinishReasons
			for _, c := range tt.chunks {
				f.Add(ReadCompletion([]byte(c)).Choices)
			}
			if diff := cmp.Diff(tt.want, f.List()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestFinishReasonsBounded: however many distinct reasons an upstream sends, the lowest
// choices' are kept, in choice order.
func TestFinishReasonsBounded(t *testing.T) {
	var f FinishReasons
	for i := 1000; i > 0; i-- {
		f.Add(fmt.Appendf(nil, `[{"index":%d,"finish_reason":"r%d"}]`, i, i))
	}
	var want []string
	for i := 1; i <= maxFinishReasons; i++ {
		want = append(want, fmt.Sprintf("r%d", i))
	}
	if diff := cmp.Diff(want, f.List()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestFinishReasonsFixtures reads the recorded OpenAI and Azure answers (Anthropic's are
// read through the gateway, translated: see finish_e2e_test.go).
func TestFinishReasonsFixtures(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"openai_chat_nonstream_usage.json", []string{"stop"}},
		{"openai_chat_reasoning_length_empty_content.json", []string{"length"}},
		{"openai_chat_nonstream_tool_calls_parallel.json", []string{"tool_calls"}},
		{"azure_chat_nonstream_filters.json", []string{"stop"}},
		{"openai_chat_stream_include_usage.sse", []string{"stop"}},
		{"openai_chat_stream_tool_calls_parallel.sse", []string{"tool_calls"}},
		{"azure_chat_stream_filters_include_usage.sse", []string{"stop"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var f FinishReasons
			if strings.HasSuffix(tt.file, ".sse") {
				for _, line := range strings.Split(string(b), "\n") {
					if d, ok := strings.CutPrefix(line, "data: "); ok {
						f.Add(ReadCompletion([]byte(d)).Choices)
					}
				}
			} else {
				f.Add(ReadCompletion(b).Choices)
			}
			if diff := cmp.Diff(tt.want, f.List()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkFinishReasonsChunk reads a stream chunk that finishes nothing, as the relay does
// for nearly every chunk.
func BenchmarkFinishReasonsChunk(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Lorem ipsum dolor"},"logprobs":null,"finish_reason":null}]}`)
	choices := ReadCompletion(chunk).Choices
	b.ReportAllocs()
	for b.Loop() {
		var f FinishReasons
		f.Add(choices)
	}
}

// BenchmarkFinishReasonsAnswer reads the finish reason of a whole answer, as the gateway
// does for every non-streamed one.
func BenchmarkFinishReasonsAnswer(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Lorem ipsum dolor sit amet","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`)
	c := ReadCompletion(body)
	b.ReportAllocs()
	for b.Loop() {
		c.FinishReasons()
	}
}
