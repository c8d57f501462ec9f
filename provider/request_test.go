package provider

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUpstreamBody(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		model string
		want  string
	}{
		{"unchanged", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "gpt-4o",
			`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`},
		{"prefix removed", `{"model":"openai/gpt-4o","messages":[1]}`, "gpt-4o", `{"model":"gpt-4o","messages":[1]}`},
		{"usage asked for a stream", `{"messages":[1],"stream":true,"model":"m"}`, "m",
			`{"stream_options":{"include_usage":true},"messages":[1],"stream":true,"model":"m"}`},
		{"usage forced in existing options", ` { "model" : "a/m", "stream": true, "stream_options": {"include_usage": false, "x": 1}, "messages": [1]}`, "m",
			` { "model" : "m", "stream": true, "stream_options": {"include_usage":true,"x":1}, "messages": [1]}`},
		{"null options replaced", `{"model":"m","stream":true,"stream_options":null,"messages":[1]}`, "m",
			`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[1]}`},
		{"client asked already", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[1]}`, "m",
			`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[1]}`},
		{"escapes kept", `{"model":"a/m","messages":[{"content":"\"model\":\"x\""}]}`, "m",
			`{"model":"m","messages":[{"content":"\"model\":\"x\""}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseChatRequest([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got := string(r.UpstreamBody(tt.model))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("invalid JSON: %s", got)
			}
		})
	}
}

// A model named twice, or hidden behind an escaped key, is refused: Loom routes and prices
// by the model the upstream will use, and decoders disagree on which duplicate wins.
func TestParseChatRequestDuplicates(t *testing.T) {
	for _, in := range []string{
		`{"model":"a","model":"b","messages":[1]}`,
		`{"model":"mock-1","messages":[1],"mod\u0065l":"gpt-4-32k"}`,
		`{"model":"m","messages":[1],"stre\u0061m":true,"stream":false}`,
		`{"model":"mock-1","messages":[1],"MODEL":"gpt-4-32k"}`,
		`{"model":"mock-1","messages":[1],"Model":"gpt-4-32k"}`,
	} {
		_, err := ParseChatRequest([]byte(in))
		var ir *InvalidRequestError
		if !errors.As(err, &ir) || !strings.Contains(ir.Message, "more than once") {
			t.Errorf("%s: err = %v, want a duplicate refusal", in, err)
		}
	}
	r, err := ParseChatRequest([]byte(`{"mod\u0065l":"openai/gpt-4o","messages":[1]}`))
	if err != nil || r.Model != "openai/gpt-4o" {
		t.Fatalf("escaped key: %+v, %v", r, err)
	}
	if got := string(r.UpstreamBody("gpt-4o")); got != `{"mod\u0065l":"gpt-4o","messages":[1]}` {
		t.Errorf("upstream body %s", got)
	}
}

func TestReadCompletion(t *testing.T) {
	c := ReadCompletion([]byte(`{"id":"x","model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":1}},"error":null}`))
	if string(c.Model) != "gpt-4o-2024-08-06" || !c.NoChoices || c.HasContent || c.HasError || c.Usage == nil || c.Usage.PromptTokens != 3 {
		t.Errorf("completion = %+v", c)
	}
	if c := ReadCompletion([]byte(`{"error":{"message":"x"}}`)); !c.HasError {
		t.Error("error member not seen")
	}
}

// BenchmarkParseChatRequest is the request-side parse: validation and the fields Loom
// routes and meters by, on a typical short conversation.
func BenchmarkParseChatRequest(b *testing.B) {
	body := []byte(`{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one word."}],"temperature":0.2,"max_tokens":64}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r, err := ParseChatRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		r.UpstreamBody("gpt-4o-mini")
	}
}

func TestReadUsage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Usage
	}{
		{"full", `{"prompt_tokens":3663,"completion_tokens":117,"total_tokens":3780,"prompt_tokens_details":{"cached_tokens":3584,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":64,"audio_tokens":0}}`,
			usage(3663, 117, 3584, 64)},
		{"sorted keys and spaces (Azure)", `{ "completion_tokens" : 12, "completion_tokens_details": {"reasoning_tokens": 0}, "prompt_tokens": 15, "prompt_tokens_details": null }`,
			usage(15, 12, 0, 0)},
		{"minimal", `{"prompt_tokens":1,"completion_tokens":2}`, usage(1, 2, 0, 0)},
		{"not integers", `{"prompt_tokens":"x","completion_tokens":2.0}`, usage(0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, *readUsage([]byte(tt.in))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func usage(prompt, completion, cached, reasoning int64) Usage {
	var u Usage
	u.PromptTokens, u.CompletionTokens = prompt, completion
	u.PromptTokensDetails.CachedTokens, u.CompletionTokensDetails.ReasoningTokens = cached, reasoning
	return u
}

// FuzzUpstreamBody: whatever a client sends and whatever the routed model is called, a
// request Loom accepts becomes a valid JSON body upstream that names the upstream model
// (invalid UTF-8 read as U+FFFD, as a JSON decoder does) and, for a stream, asks for usage.
func FuzzUpstreamBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"a/m","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[1]}`,
		` { "messages" : [ 1 ] , "stream" : true , "model" : "m\\u0041" , "stream_options" : null } `,
		`{"model":"m","messages":[{"content":"\"model\":\"x\""}],"stream":false}`,
		`{"model":"mock-1","messages":[1],"mod\u0065l":"gpt-4-32k"}`,
		`{"model":"a","model":"b","messages":[1]}`,
		`{"model":"a","MODEL":"b","messages":[1]}`,
		`{"model":"a","stream":true,"stream_options":{"\u0069nclude_usage":false},"messages":[1]}`,
		`{"model":"a\u007f\u000b","stream":true,"Stream_Options":{"include_usage":false},"messages":[1]}`,
	} {
		f.Add(s, "upstream-model")
	}
	f.Add(`{"model":"a","messages":[1]}`, "m\x7f\v\x00\xff\u2028\"<&")
	f.Fuzz(func(t *testing.T, in, model string) {
		r, err := ParseChatRequest([]byte(in))
		if err != nil {
			return
		}
		out := r.UpstreamBody(model)
		var got struct {
			Model         string `json:"model"`
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if !json.Valid(out) {
			t.Fatalf("upstream body is not JSON:\n%q", out)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("upstream body does not decode: %v\n%q", err, out)
		}
		if want := string([]rune(model)); got.Model != want {
			t.Errorf("model = %q, want %q in %q", got.Model, want, out)
		}
		if r.Stream && !includeUsage(out) {
			t.Errorf("stream without include_usage: %s", out)
		}
	})
}

func TestAzureAcceptsStreamOptions(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"", true},
		{"2024-06-01", false},
		{"2024-02-01", false},
		{"2024-10-01", false},
		{"2024-10-21", true},
		{"2025-01-01", true},
		{"2024-08-01-preview", false},
		{"2024-09-01-preview", true},
		{"2024-09-01-PREVIEW", true},
		{"2025-04-01-preview", true},
		{"preview", true},
		{"latest", true},
		{"2024-6-01", true}, // not a date: of the v1 era
	}
	for _, tt := range tests {
		if got := acceptsStreamOptions(tt.version); got != tt.want {
			t.Errorf("acceptsStreamOptions(%q) = %v, want %v", tt.version, got, tt.want)
		}
	}
}

func TestWithoutMember(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"middle", `{"a":1, "stream_options":{"include_usage":true}, "b":[2]}`, `{"a":1,"b":[2]}`},
		{"only", `{"stream_options":null}`, `{}`},
		{"escaped and twice", `{"stre\u0061m_options":1,"x":"y","stream_options":2}`, `{"x":"y"}`},
		{"absent", `{"a": 1}`, `{"a": 1}`},
		{"other case kept", `{"Stream_Options":1}`, `{"Stream_Options":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, string(withoutMember([]byte(tt.in), "stream_options"))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
