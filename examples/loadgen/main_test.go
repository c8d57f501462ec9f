package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom/examples/mockupstream/mockapi"
)

// load runs loadgen with -json against url and decodes its result.
func load(t *testing.T, url string, args ...string) *Result {
	t.Helper()
	var out bytes.Buffer
	args = append([]string{"-url", url, "-json", "-key", "sk-test"}, args...)
	if err := run(t.Context(), args, &out); err != nil {
		t.Fatalf("run %q: %v", args, err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("decoding %s: %v", out.Bytes(), err)
	}
	return &r
}

func checkOK(t *testing.T, r *Result) {
	t.Helper()
	if r.Requests == 0 || r.OK != r.Requests || r.Errors != 0 || len(r.ErrorsByKind) != 0 {
		t.Fatalf("requests %d ok %d errors %v (%s)", r.Requests, r.OK, r.ErrorsByKind, r.FirstError)
	}
	for name, p := range map[string]Percentiles{"latency": r.Latency, "ttfb": r.TTFB} {
		if p.Count != uint64(r.OK) || p.P50 <= 0 || p.P50 > p.P90 || p.P90 > p.P99 || p.P99 > p.Max {
			t.Errorf("%s: %+v, want 0 < p50 ≤ p90 ≤ p99 ≤ max over %d samples", name, p, r.OK)
		}
	}
	if r.TTFB.P50 > r.Latency.P50 || r.TTFB.Max > r.Latency.Max {
		t.Errorf("ttfb %+v above latency %+v", r.TTFB, r.Latency)
	}
	if r.RPS <= 0 || r.ElapsedS <= 0 {
		t.Errorf("rps %v elapsed %v", r.RPS, r.ElapsedS)
	}
	if r.SentTotal < r.Requests || r.AnsweredTotal != r.SentTotal {
		t.Errorf("sent %d answered %d requests %d", r.SentTotal, r.AnsweredTotal, r.Requests)
	}
}

func TestClosedLoad(t *testing.T) {
	const chunks = 5
	var seen atomic.Pointer[http.Request]
	mock := mockapi.New(mockapi.Config{Chunks: chunks})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r)
		mock.ServeHTTP(w, r)
	}))
	defer srv.Close()

	tests := []struct {
		name       string
		args       []string
		wantChunks float64 // per request; 0 for non-streaming
	}{
		{"non-streaming", nil, 0},
		{"streaming", []string{"-stream"}, chunks + 2},
		{"streaming with usage", []string{"-stream", "-include-usage"}, chunks + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-concurrency", "4", "-duration", "1s", "-warmup", "200ms",
				"-H", "X-Test: yes"}, tt.args...)
			r := load(t, srv.URL+"/v1", args...)
			checkOK(t, r)
			if r.Mode != "closed" || r.Concurrency != 4 {
				t.Errorf("mode %q concurrency %d", r.Mode, r.Concurrency)
			}
			if r.SentTotal == r.Requests {
				t.Errorf("no warm-up request sent (sent %d, measured %d)", r.SentTotal, r.Requests)
			}
			if diff := cmp.Diff(tt.wantChunks, r.ChunksPerRequest); diff != "" {
				t.Errorf("chunks per request (-want +got):\n%s", diff)
			}
			if tt.wantChunks > 0 {
				if r.Chunks != int64(tt.wantChunks)*r.OK {
					t.Errorf("chunks %d, want %v × %d", r.Chunks, tt.wantChunks, r.OK)
				}
				d := r.ChunkDelay
				if d == nil || d.Count != uint64(r.Chunks) || d.P50 > d.P99 || d.P99 > d.Max {
					t.Errorf("chunk delay %+v, want one sample per chunk (%d)", d, r.Chunks)
				}
			} else if r.ChunkDelay != nil {
				t.Errorf("chunk delay %+v for a non-streaming load", r.ChunkDelay)
			}
			req := seen.Load()
			if got := req.Header.Get("Authorization"); got != "Bearer sk-test" {
				t.Errorf("Authorization %q", got)
			}
			if got := req.Header.Get("X-Test"); got != "yes" {
				t.Errorf("X-Test %q", got)
			}
		})
	}
}

func TestOpenLoad(t *testing.T) {
	srv := httptest.NewServer(mockapi.New(mockapi.Config{Chunks: 3}))
	defer srv.Close()
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			args := []string{"-rate", "200", "-duration", "1s", "-warmup", "100ms", "-max-inflight", "8"}
			if stream {
				args = append(args, "-stream")
			}
			r := load(t, srv.URL+"/v1/", args...)
			checkOK(t, r)
			if r.Mode != "open" || r.Rate != 200 || r.MaxInflight != 8 {
				t.Errorf("mode %q rate %v max-inflight %d", r.Mode, r.Rate, r.MaxInflight)
			}
			// 1 s at 200/s is 200 due requests, give or take the one on the boundary.
			if r.Requests < 199 || r.Requests > 201 {
				t.Errorf("%d requests, want 200", r.Requests)
			}
			if r.StartLag == nil || r.StartLag.Count != uint64(r.Requests) {
				t.Errorf("start lag %+v", r.StartLag)
			}
		})
	}
}

// TestOpenLoadCountsQueueing checks that with too few slots, requests wait, are counted
// late, and their waiting shows in the latency (no coordinated omission).
func TestOpenLoadCountsQueueing(t *testing.T) {
	srv := httptest.NewServer(mockapi.New(mockapi.Config{Latency: 20 * time.Millisecond}))
	defer srv.Close()
	// One slot, 20 ms per answer, 100 due per second: the queue grows by ~half the
	// requests, so late ones wait for tens of milliseconds.
	r := load(t, srv.URL, "-rate", "100", "-max-inflight", "1", "-duration", "500ms", "-warmup", "0")
	if r.LateStarts == 0 {
		t.Errorf("no late starts")
	}
	if r.Latency.Max < 100_000 {
		t.Errorf("max latency %vµs, want the queueing (≥ 100ms) in it", r.Latency.Max)
	}
	if r.StartLag.Max < 50_000 {
		t.Errorf("max start lag %vµs, want ≥ 50ms", r.StartLag.Max)
	}
}

func TestMaxRequests(t *testing.T) {
	srv := httptest.NewServer(mockapi.New(mockapi.Config{}))
	defer srv.Close()
	r := load(t, srv.URL, "-concurrency", "3", "-max-requests", "10", "-duration", "10s", "-warmup", "0")
	checkOK(t, r)
	if r.Requests != 10 || r.SentTotal != 10 {
		t.Errorf("requests %d sent %d, want 10", r.Requests, r.SentTotal)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		stream  bool
		kind    string
	}{
		{"status 500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`, http.StatusInternalServerError)
		}, false, "status_500"},
		{"status 429 on a stream", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"slow down"}}`, http.StatusTooManyRequests)
		}, true, "status_429"},
		{"stream without DONE", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "data: {\"choices\":[]}\n\n")
		}, true, "stream_incomplete"},
		{"error event", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n")
		}, true, "stream_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			args := []string{"-concurrency", "2", "-duration", "300ms", "-warmup", "0"}
			if tt.stream {
				args = append(args, "-stream")
			}
			r := load(t, srv.URL+"/v1", args...)
			if r.Requests == 0 || r.OK != 0 || r.Errors != r.Requests {
				t.Fatalf("requests %d ok %d errors %d", r.Requests, r.OK, r.Errors)
			}
			if diff := cmp.Diff(map[string]int64{tt.kind: r.Requests}, r.ErrorsByKind); diff != "" {
				t.Errorf("errors by kind (-want +got):\n%s", diff)
			}
			if r.FirstError == "" {
				t.Error("no first error")
			}
			if r.Latency.Count != 0 {
				t.Errorf("latency recorded for failures: %+v", r.Latency)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	r := load(t, url, "-duration", "100ms", "-warmup", "0")
	if r.Requests == 0 || r.ErrorsByKind["conn_refused"] != r.Requests || r.AnsweredTotal != 0 {
		t.Errorf("requests %d errors %v answered %d", r.Requests, r.ErrorsByKind, r.AnsweredTotal)
	}
}

func TestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so the server notices the client leaving
		<-r.Context().Done()
	}))
	defer srv.Close()
	start := time.Now()
	r := load(t, srv.URL, "-duration", "100ms", "-warmup", "0", "-timeout", "200ms")
	if r.Requests != 1 || r.ErrorsByKind["timeout"] != 1 {
		t.Errorf("requests %d errors %v", r.Requests, r.ErrorsByKind)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("run took %v", d)
	}
}

func TestTextOutput(t *testing.T) {
	srv := httptest.NewServer(mockapi.New(mockapi.Config{}))
	defer srv.Close()
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", srv.URL, "-stream", "-duration", "200ms", "-warmup", "0"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"requests ", "latency ", "ttfb ", "chunks ", "chunk delay "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no url", nil},
		{"bad scheme", []string{"-url", "ftp://x"}},
		{"no host", []string{"-url", "http://"}},
		{"zero concurrency", []string{"-url", "http://127.0.0.1:1", "-concurrency", "0"}},
		{"negative rate", []string{"-url", "http://127.0.0.1:1", "-rate", "-1"}},
		{"zero duration", []string{"-url", "http://127.0.0.1:1", "-duration", "0"}},
		{"bad header", []string{"-url", "http://127.0.0.1:1", "-H", "nocolon"}},
		{"extra args", []string{"-url", "http://127.0.0.1:1", "extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(t.Context(), tt.args, io.Discard); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestChatURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://h:1/v1", "http://h:1/v1/chat/completions"},
		{"http://h:1/v1/", "http://h:1/v1/chat/completions"},
		{"http://h:1", "http://h:1/chat/completions"},
		{"https://h/openai/deployments/d/chat/completions?api-version=2024-10-21",
			"https://h/openai/deployments/d/chat/completions?api-version=2024-10-21"},
	}
	for _, tt := range tests {
		got, err := chatURL(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("chatURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCancel checks that cancelling the run (SIGINT) ends it at once and that the
// requests it cut short are not reported as errors.
func TestCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	if err := run(ctx, []string{"-url", srv.URL, "-json", "-concurrency", "3", "-duration", "1m", "-warmup", "0"}, &out); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v after cancel", d)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Requests != 0 || r.Errors != 0 || r.SentTotal != 3 {
		t.Errorf("requests %d errors %v sent %d; want 0, none, 3", r.Requests, r.ErrorsByKind, r.SentTotal)
	}
}
