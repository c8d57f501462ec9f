package stream

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const chunk = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"word"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
const usageChunk = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}}` + "\n\n"

func TestRelay(t *testing.T) {
	in := chunk + chunk + usageChunk + "data: [DONE]\n\n"
	for _, strip := range []bool{false, true} {
		w := httptest.NewRecorder()
		res := Relay(w, strings.NewReader(in), RelayOptions{StripUsage: strip, Capture: 1 << 20})
		want := in
		if strip {
			want = chunk + chunk + "data: [DONE]\n\n"
		}
		if diff := cmp.Diff(want, w.Body.String()); diff != "" {
			t.Errorf("strip=%v: relayed (-want +got):\n%s", strip, diff)
		}
		if res.Usage == nil || res.Usage.PromptTokens != 9 || res.Usage.CompletionTokens != 3 ||
			res.Usage.PromptTokensDetails.CachedTokens != 2 || res.Usage.CompletionTokensDetails.ReasoningTokens != 1 {
			t.Errorf("usage = %+v", res.Usage)
		}
		if !res.Done || res.Chunks != 2 || res.Model != "gpt-4o-2024-08-06" || string(res.Captured) != in || res.Truncated {
			t.Errorf("result = %+v", res)
		}
	}
	w := httptest.NewRecorder()
	res := Relay(w, strings.NewReader(in), RelayOptions{Capture: 10})
	if len(res.Captured) != 10 || !res.Truncated {
		t.Errorf("capture 10: %d bytes, truncated %v", len(res.Captured), res.Truncated)
	}
}

// discardFlusher is a ResponseWriter that throws bytes away and can flush.
type discardFlusher struct{ httptest.ResponseRecorder }

func (d *discardFlusher) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardFlusher) Flush()                      {}

// BenchmarkRelay is the gateway's cost per relayed chunk: split, inspect, write, flush.
func BenchmarkRelay(b *testing.B) {
	in := []byte(strings.Repeat(chunk, 100) + usageChunk + "data: [DONE]\n\n")
	w := &discardFlusher{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		Relay(w, bytes.NewReader(in), RelayOptions{StripUsage: true})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*102), "ns/chunk")
}

// failAfter returns its data, then an error (as an upstream read does once the client that
// owns the request context hangs up).
type failAfter struct {
	r   io.Reader
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// An upstream read failing after [DONE] was relayed is not an interrupted stream.
func TestRelayCompleteBeforeReadError(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"after [DONE]", chunk + "data: [DONE]\n\n", false},
		{"before [DONE]", chunk, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := Relay(httptest.NewRecorder(), &failAfter{strings.NewReader(tt.in), errors.New("context canceled")}, RelayOptions{})
			if (res.ReadErr != nil) != tt.wantErr {
				t.Errorf("ReadErr = %v, want error: %v", res.ReadErr, tt.wantErr)
			}
		})
	}
}

// TestRelayFinishReasons: the choices' finish reasons in choice order, known to
// BeforeDone already, and none from a stream that ends before any choice finished.
func TestRelayFinishReasons(t *testing.T) {
	finish := func(index int, reason string) string {
		return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":` +
			string(rune('0'+index)) + `,"delta":{},"logprobs":null,"finish_reason":"` + reason + `"}]}` + "\n\n"
	}
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "one", in: chunk + finish(0, "stop") + usageChunk + "data: [DONE]\n\n", want: []string{"stop"}},
		{name: "choices finish out of order", in: chunk + finish(1, "length") + finish(2, "stop") + finish(0, "stop") + "data: [DONE]\n\n",
			want: []string{"stop", "length"}},
		{name: "cut off", in: chunk + chunk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var beforeDone []string
			res := Relay(httptest.NewRecorder(), strings.NewReader(tt.in), RelayOptions{BeforeDone: func(r Result) error {
				beforeDone = r.FinishReasons
				return nil
			}})
			if diff := cmp.Diff(tt.want, res.FinishReasons); diff != "" {
				t.Errorf("Result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, beforeDone); res.Done && diff != "" {
				t.Errorf("BeforeDone (-want +got):\n%s", diff)
			}
		})
	}
}
