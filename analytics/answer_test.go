package analytics

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func toolCall(index int, id, name, args string) ToolCall {
	c := ToolCall{Index: index, ID: id, Type: "function"}
	c.Function.Name, c.Function.Arguments = name, args
	return c
}

func TestReassemble(t *testing.T) {
	fixture, err := os.ReadFile("../testdata/fixtures/openai_chat_stream_tool_calls_parallel.sse")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		want Answer
	}{
		{
			name: "parallel tool calls (recorded)",
			in:   string(fixture),
			want: Answer{Done: true, Choices: []AnswerChoice{{Index: 0, Role: "assistant", FinishReason: "tool_calls", ToolCalls: []ToolCall{
				toolCall(0, "call_M26z19sncd7b4LBgzKRRbaUE", "secret_retrieval_tool", `{"password": "mellon"}`),
				toolCall(1, "call_KPXe5NX7IcKkaBUhc6dto2QV", "secret_retrieval_tool", `{"password": "radiance"}`),
			}}}},
		},
		{
			name: "content across chunks, cut off without [DONE]",
			in: "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"<script>\"}}]}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"alert(1)</script>\"}}]}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"never fin",
			want: Answer{Choices: []AnswerChoice{{Index: 0, Role: "assistant", Content: "<script>alert(1)</script>"}}},
		},
		{
			name: "two choices, interleaved",
			in: "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\n" +
				"data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n",
			want: Answer{Done: true, Choices: []AnswerChoice{{Index: 1, Content: "bb", FinishReason: "length"}, {Index: 0, Content: "a", FinishReason: "stop"}}},
		},
		{
			name: "hostile: huge index, junk, NUL, invalid UTF-8, comments",
			in: ": comment\n\ndata: {\"choices\":[{\"index\":2000000000,\"delta\":{\"content\":\"x\"}}]}\n\n" +
				"data: not json\n\ndata: \x00\xff\n\nevent: ping\n\n" +
				"data: {\"choices\":[{\"index\":-1,\"delta\":{\"tool_calls\":[{\"index\":999999999,\"function\":{\"arguments\":\"{\"}}]}}]}\n\n",
			want: Answer{Choices: []AnswerChoice{{Index: 2000000000, Content: "x"},
				{Index: -1, ToolCalls: []ToolCall{{Index: 999999999, Function: toolCall(0, "", "", "{").Function}}}}},
		},
		{
			name: "error event",
			in:   "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
			want: Answer{Choices: []AnswerChoice{{Index: 0, Content: "par"}}, Error: []byte(`{"message":"boom","type":"server_error"}`)},
		},
		{
			name: "empty",
			in:   "",
			want: Answer{Choices: []AnswerChoice{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Reassemble([]byte(tt.in))); diff != "" {
				t.Errorf("Reassemble (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefuseFormula(t *testing.T) {
	tests := []struct{ in, want string }{
		{"=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"},
		{"+1", "'+1"}, {"-2", "'-2"}, {"@SUM(A1)", "'@SUM(A1)"}, {"\tx", "'\tx"}, {"\rx", "'\rx"},
		{"gpt-4o", "gpt-4o"}, {"", ""}, {"12", "12"}, {"a=b", "a=b"},
	}
	for _, tt := range tests {
		if got := defuseFormula(tt.in); got != tt.want {
			t.Errorf("defuseFormula(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
