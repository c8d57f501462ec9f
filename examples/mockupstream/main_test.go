package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// start runs the server in-process on a free loopback port and returns its base URL.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the listen line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	const marker = "listening on "
	i := strings.Index(line, marker)
	if i < 0 {
		t.Fatalf("no address in %q", line)
	}
	return strings.TrimSpace(line[i+len(marker):])
}

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestNonStreaming(t *testing.T) {
	base := start(t, "-chunks", "4", "-chunk-bytes", "5")
	for _, path := range []string{
		"/v1/chat/completions",
		"/chat/completions",
		"/openai/v1/chat/completions",
		"/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
	} {
		t.Run(path, func(t *testing.T) {
			resp := post(t, base+path, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi \"there\""}]}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				Created int64  `json:"created"`
				Model   string `json:"model"`
				Choices []struct {
					Message struct {
						Role    string `json:"role"`
						Content string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					PromptTokens        int `json:"prompt_tokens"`
					CompletionTokens    int `json:"completion_tokens"`
					TotalTokens         int `json:"total_tokens"`
					PromptTokensDetails *struct {
						CachedTokens *int `json:"cached_tokens"`
					} `json:"prompt_tokens_details"`
					CompletionTokensDetails *struct {
						ReasoningTokens *int `json:"reasoning_tokens"`
					} `json:"completion_tokens_details"`
				} `json:"usage"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Created == 0 {
				t.Errorf("id %q object %q created %d", got.ID, got.Object, got.Created)
			}
			if got.Model != "gpt-4o-mini" {
				t.Errorf("model %q", got.Model)
			}
			if len(got.Choices) != 1 || got.Choices[0].Message.Role != "assistant" ||
				len(got.Choices[0].Message.Content) != 20 || got.Choices[0].FinishReason != "stop" {
				t.Errorf("choices %+v", got.Choices)
			}
			u := got.Usage
			if u.PromptTokens == 0 || u.CompletionTokens != 4 || u.TotalTokens != u.PromptTokens+4 ||
				u.PromptTokensDetails == nil || u.PromptTokensDetails.CachedTokens == nil ||
				u.CompletionTokensDetails == nil || u.CompletionTokensDetails.ReasoningTokens == nil {
				t.Errorf("usage %+v", u)
			}
		})
	}
}

func TestModelIsEscaped(t *testing.T) {
	base := start(t)
	resp := post(t, base+"/v1/chat/completions", `{"model":"a\"b\\c\u0001é","messages":[{"role":"user","content":"x"}]}`)
	var got struct{ Model string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if want := "a\"b\\c\u0001é"; got.Model != want {
		t.Errorf("model %q, want %q", got.Model, want)
	}
}

// chunk is what the test checks in every streamed event.
type chunk struct {
	Object  string            `json:"object"`
	Model   string            `json:"model"`
	Choices []json.RawMessage `json:"choices"`
	Usage   json.RawMessage   `json:"usage"`
	HasUse  bool              `json:"-"`
	SentNS  int64             `json:"loom_sent_ns"`
}

func readStream(t *testing.T, r io.Reader) (chunks []chunk, done bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line without data: %q", line)
		}
		if done {
			t.Fatalf("event after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		var members map[string]json.RawMessage
		json.Unmarshal([]byte(data), &members)
		_, c.HasUse = members["usage"]
		if _, ok := members["error"]; ok {
			t.Errorf("chunk carries an error member: %q", data)
		}
		chunks = append(chunks, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return chunks, done
}

func TestStreaming(t *testing.T) {
	base := start(t, "-chunks", "5", "-chunk-delay", "1ms")
	tests := []struct {
		name         string
		body         string
		includeUsage bool
	}{
		{"plain", `{"model":"m1","messages":[{"role":"user","content":"x"}],"stream":true}`, false},
		{"usage false", `{"model":"m1","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":false}}`, false},
		{"usage true", `{"model":"m1","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().UnixNano()
			resp := post(t, base+"/v1/chat/completions", tt.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type %q", ct)
			}
			chunks, done := readStream(t, resp.Body)
			if !done {
				t.Error("no data: [DONE]")
			}
			want := 1 + 5 + 1 // role, content, finish
			if tt.includeUsage {
				want++
			}
			if len(chunks) != want {
				t.Fatalf("%d chunks, want %d", len(chunks), want)
			}
			prev := before
			for i, c := range chunks {
				if c.Object != "chat.completion.chunk" || c.Model != "m1" {
					t.Errorf("chunk %d: object %q model %q", i, c.Object, c.Model)
				}
				if c.SentNS < prev || c.SentNS > time.Now().UnixNano() {
					t.Errorf("chunk %d: loom_sent_ns %d out of order or in the future", i, c.SentNS)
				}
				prev = c.SentNS
				last := i == len(chunks)-1
				switch {
				case tt.includeUsage && last:
					if len(c.Choices) != 0 || len(c.Usage) == 0 || string(c.Usage) == "null" {
						t.Errorf("usage chunk: choices %d usage %s", len(c.Choices), c.Usage)
					}
				case tt.includeUsage:
					if len(c.Choices) != 1 || string(c.Usage) != "null" {
						t.Errorf("chunk %d: choices %d usage %q, want 1 and null", i, len(c.Choices), c.Usage)
					}
				default:
					if len(c.Choices) != 1 || c.HasUse {
						t.Errorf("chunk %d: choices %d, usage member present %v", i, len(c.Choices), c.HasUse)
					}
				}
			}
			// The content chunks are 5 ms apart at least (1 ms each), so the stamps are
			// the write times, not one stamp for the whole answer.
			if d := chunks[len(chunks)-1].SentNS - chunks[0].SentNS; d < int64(5*time.Millisecond) {
				t.Errorf("stream spans %v, want ≥ 5ms", time.Duration(d))
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	base := start(t)
	tests := []struct {
		name, path, body string
		status           int
		param            any
	}{
		{"malformed", "/v1/chat/completions", `{"model":`, 400, nil},
		{"no model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400, "model"},
		{"no messages", "/v1/chat/completions", `{"model":"m"}`, 400, "messages"},
		{"empty messages", "/v1/chat/completions", `{"model":"m","messages":[ ]}`, 400, "messages"},
		{"messages not array", "/v1/chat/completions", `{"model":"m","messages":"hi"}`, 400, "messages"},
		{"model wrong type", "/v1/chat/completions", `{"model":5,"messages":[{}]}`, 400, nil},
		{"too large", "/v1/chat/completions", `{"model":"m","messages":["` + strings.Repeat("x", 5<<20) + `"]}`, 413, nil},
		{"unknown path", "/v1/nothing", `{}`, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, base+tt.path, tt.body)
			var got struct {
				Error map[string]any `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got.Error["message"] == "" || got.Error["type"] != "invalid_request_error" {
				t.Errorf("error %v", got.Error)
			}
			if diff := cmp.Diff(tt.param, got.Error["param"]); diff != "" {
				t.Errorf("param (-want +got):\n%s", diff)
			}
		})
	}
}

func TestModels(t *testing.T) {
	base := start(t)
	resp, err := http.Get(base + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "list" || len(got.Data) == 0 || got.Data[0].ID == "" {
		t.Errorf("models %+v", got)
	}
}

func TestLatency(t *testing.T) {
	base := start(t, "-latency", "30ms")
	t0 := time.Now()
	resp := post(t, base+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}]}`)
	io.Copy(io.Discard, resp.Body)
	if d := time.Since(t0); d < 30*time.Millisecond {
		t.Errorf("answered in %v, want ≥ 30ms", d)
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-chunks", "0"}, &out); err == nil {
		t.Error("-chunks 0 accepted")
	}
	if err := run(t.Context(), []string{"-nope"}, &out); err == nil {
		t.Error("unknown flag accepted")
	}
}
