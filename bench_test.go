package loom_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
)

// BenchmarkChatCompletion measures one non-streaming request through Gateway.ServeHTTP:
// authentication (cached), parsing, routing, the upstream call over loopback to an
// in-process fake, relaying the answer and handing the trace to the pipeline. The
// "http.Transport" variant sends upstream through the standard library's transport (its
// per-connection goroutines), the default one through provider.Transport (on the
// handler's goroutine).
func BenchmarkChatCompletion(b *testing.B) {
	body := fixture(b, "openai_chat_nonstream_usage.json")
	up := staticUpstream(b, "application/json", body)
	for _, tt := range []struct {
		name   string
		client *http.Client
	}{
		{"provider.Transport", nil},
		{"http.Transport", &http.Client{Transport: provider.NewTransport()}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			e := newEnv(b, []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL, APIKey: "sk", Client: tt.client}), Models: []string{"gpt-4o"}}})
			req := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"What is 4200 + 42?"}]}`)
			serveLoop(b, e, req)
		})
	}
}

// BenchmarkDirectUpstream is the baseline for BenchmarkChatCompletion: the same request
// to the same fake upstream, sent straight from an HTTP client. The difference between the
// two is what the gateway adds.
func BenchmarkDirectUpstream(b *testing.B) {
	body := fixture(b, "openai_chat_nonstream_usage.json")
	up := staticUpstream(b, "application/json", body)
	client := &http.Client{Transport: &provider.Transport{}}
	req := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"What is 4200 + 42?"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post(up.URL+"/chat/completions", "application/json", bytes.NewReader(req))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkChatCompletionStream measures a streamed request of a recorded 30-chunk
// answer; ns/op divided by the chunk count is the relay cost per chunk.
func BenchmarkChatCompletionStream(b *testing.B) {
	body := fixture(b, "openai_chat_stream_tool_calls_parallel.sse")
	up := staticUpstream(b, "text/event-stream", body)
	e := newEnv(b, []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL, APIKey: "sk"}), Models: []string{"gpt-4o"}}})
	req := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"What is 4200 + 42?"}]}`)
	chunks := len(sseEvents(body))
	serveLoop(b, e, req)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chunks), "ns/chunk")
}

// staticUpstream answers every request with body, as fast as it can: the benchmarks'
// upstream, with nothing recorded.
func staticUpstream(b *testing.B, contentType string, body []byte) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write(body)
	}))
	b.Cleanup(up.Close)
	return up
}

// serveLoop sends req through the gateway's ServeHTTP for the benchmark's iterations.
func serveLoop(b *testing.B, e *env, req []byte) {
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(req))
		r.Header.Set("Authorization", "Bearer "+e.key)
		w := httptest.NewRecorder()
		e.gw.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
