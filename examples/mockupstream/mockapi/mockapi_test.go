package mockapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmarks time the
// handler, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

func benchmarkChat(b *testing.B, body string) {
	h := New(Config{})
	req := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader([]byte(body))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset([]byte(body))
		req.Body = http.NoBody
		req.Body = readCloser{rd}
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func BenchmarkChat(b *testing.B) {
	benchmarkChat(b, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}]}`)
}

func BenchmarkChatStream(b *testing.B) {
	benchmarkChat(b, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"stream":true,"stream_options":{"include_usage":true}}`)
}
