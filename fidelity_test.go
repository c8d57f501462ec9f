package loom_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// socketUpstream is a fake upstream on a bare TCP listener, for answers httptest would
// normalise: answer writes the exact bytes of the response, status line included, and the
// connection is closed when it returns.
type socketUpstream struct {
	URL    string
	mu     sync.Mutex
	bodies [][]byte // request bodies received
}

func newSocketUpstream(t *testing.T, answer func(w io.Writer, body []byte)) *socketUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &socketUpstream{URL: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				body, _ := io.ReadAll(req.Body)
				u.mu.Lock()
				u.bodies = append(u.bodies, body)
				u.mu.Unlock()
				answer(conn, body)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return u
}

func (u *socketUpstream) lastBody(t *testing.T) []byte {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.bodies) == 0 {
		t.Fatal("the upstream received no request")
	}
	return u.bodies[len(u.bodies)-1]
}

// head is an HTTP/1.1 response head; the body that follows ends when the connection closes.
func head(status string, headers ...string) string {
	return "HTTP/1.1 " + status + "\r\n" + strings.Join(append(headers, "Connection: close"), "\r\n") + "\r\n\r\n"
}

func socketOpenAIRoute(u *socketUpstream) loom.Route {
	return loom.Route{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: u.URL + "/v1"})}
}

// rawClient does not negotiate compression, so a test sees the bytes the gateway sends.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// send posts body to the gateway and reads the whole answer.
func (e *env) send(t *testing.T, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// traceOf is what the fidelity tests check of a trace.
type traceOf struct {
	Status           int
	ErrorType        string
	UsageSource      tracing.UsageSource
	PromptTokens     int64
	CompletionTokens int64
	ServedModel      string
}

func (e *env) lastTrace(t *testing.T, n int) traceOf {
	t.Helper()
	got := e.traces(t, n)
	if len(got) < n {
		t.Fatalf("%d traces, want %d", len(got), n)
	}
	tr := got[n-1]
	return traceOf{tr.Status, tr.ErrorType, tr.UsageSource, tr.PromptTokens, tr.CompletionTokens, tr.ServedModel}
}

func chunk(content, finish string) string {
	f := "null"
	if finish != "" {
		f = `"` + finish + `"`
	}
	return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":` + f + `}]}` + "\n\n"
}

const usageChunk = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}` + "\n\n"

const completion = `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`

const streamRequest = `{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
const jsonRequest = `{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`

// Item 1: Azure api-versions that refuse stream_options do not get it, and the stream's
// usage is estimated instead of the request failing.
func TestAzureStreamOptionsByVersion(t *testing.T) {
	stream := chunk("a", "") + chunk("b", "stop")
	tests := []struct {
		name        string
		version     string
		wantOptions bool
		wantSource  tracing.UsageSource
	}{
		{"GA before stream_options", "2024-06-01", false, tracing.UsageEstimated},
		{"preview before stream_options", "2024-08-01-preview", false, tracing.UsageEstimated},
		{"first preview with it", "2024-09-01-preview", true, tracing.UsageReported},
		{"first GA with it", "2024-10-21", true, tracing.UsageReported},
		{"later preview", "2025-04-01-preview", true, tracing.UsageReported},
		{"v1 path", "", true, tracing.UsageReported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Like Azure: versions before the option refuse the whole request.
			up := newSocketUpstream(t, func(w io.Writer, body []byte) {
				var req map[string]any
				json.Unmarshal(body, &req)
				_, has := req["stream_options"]
				if has && !tt.wantOptions {
					msg := `{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}`
					io.WriteString(w, head("400 Bad Request", "Content-Type: application/json", fmt.Sprintf("Content-Length: %d", len(msg)))+msg)
					return
				}
				usage := ""
				if has {
					usage = usageChunk
				}
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream")+stream+usage+"data: [DONE]\n\n")
			})
			e := newEnv(t, []loom.Route{{Name: "azure", Provider: provider.NewAzure(provider.AzureConfig{Endpoint: up.URL, APIVersion: tt.version})}})
			resp, got := e.send(t, `{"model":"azure/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			if diff := cmp.Diff(stream+"data: [DONE]\n\n", string(got)); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
			var sent map[string]any
			json.Unmarshal(up.lastBody(t), &sent)
			if _, has := sent["stream_options"]; has != tt.wantOptions {
				t.Errorf("upstream got stream_options: %v, want %v", has, tt.wantOptions)
			}
			if got := e.lastTrace(t, 1); got.UsageSource != tt.wantSource || got.ErrorType != "" {
				t.Errorf("trace = %+v, want usage %s and no error", got, tt.wantSource)
			}
		})
	}
}

func compress(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw deflate":
		w, _ = flate.NewWriter(&buf, flate.DefaultCompression)
	default:
		return append([]byte("\x1b\x00\xf8opaque"), b...) // stands for br or zstd bytes
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Item 2: a compressed answer is decoded for metering and sent decoded; one in an encoding
// Loom cannot decode is passed on as it came, labelled with its encoding.
func TestCompressedUpstream(t *testing.T) {
	sse := chunk("hi", "stop") + usageChunk + "data: [DONE]\n\n"
	tests := []struct {
		name, request       string
		encoding, header    string // how the upstream compresses, what it calls it
		plain               string
		wantEncoding        string
		wantPlain           bool // the client gets plain; else the upstream's bytes
		wantSource          tracing.UsageSource
		wantServed          string
		wantContentTypeJSON bool
	}{
		{"gzip JSON", jsonRequest, "gzip", "gzip", completion, "", true, tracing.UsageReported, "gpt-4o-2024", true},
		{"deflate JSON", jsonRequest, "deflate", "deflate", completion, "", true, tracing.UsageReported, "gpt-4o-2024", true},
		{"raw deflate JSON", jsonRequest, "raw deflate", "deflate", completion, "", true, tracing.UsageReported, "gpt-4o-2024", true},
		{"brotli JSON", jsonRequest, "br", "br", completion, "br", false, tracing.UsageMissing, "", true},
		{"gzip stream", `{"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			"gzip", "gzip", sse, "", true, tracing.UsageReported, "gpt-4o-2024", false},
		{"brotli stream", streamRequest, "br", "br", sse, "br", false, tracing.UsageMissing, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := compress(t, tt.encoding, []byte(tt.plain))
			ct := "application/json"
			if !tt.wantContentTypeJSON {
				ct = "text/event-stream"
			}
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: "+ct, "Content-Encoding: "+tt.header)+string(body))
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			resp, got := e.send(t, tt.request)
			want := string(body)
			if tt.wantPlain {
				want = tt.plain
			}
			if diff := cmp.Diff(want, string(got)); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
			if h := resp.Header.Get("Content-Encoding"); h != tt.wantEncoding {
				t.Errorf("Content-Encoding = %q, want %q", h, tt.wantEncoding)
			}
			if h := resp.Header.Get("Content-Type"); h != ct {
				t.Errorf("Content-Type = %q, want %q", h, ct)
			}
			tr := e.lastTrace(t, 1)
			if tr.UsageSource != tt.wantSource || tr.ServedModel != tt.wantServed || tr.ErrorType != "" || tr.Status != 200 {
				t.Errorf("trace = %+v, want usage %s, served %q, no error", tr, tt.wantSource, tt.wantServed)
			}
		})
	}
}

// Item 4: a usage chunk that is dropped does not hold back the finish chunk that arrived
// with it. The upstream holds [DONE] until the client has the finish chunk.
func TestStrippedUsageDoesNotHoldBack(t *testing.T) {
	for _, tt := range []struct {
		name, options string
		gzip          bool // the upstream compresses, flushing after each write
		want          string
	}{
		{"usage not asked", "", false, chunk("a", "") + chunk("b", "stop") + "data: [DONE]\n\n"},
		{"usage asked", `"stream_options":{"include_usage":true},`, false, chunk("a", "") + chunk("b", "stop") + usageChunk + "data: [DONE]\n\n"},
		{"usage not asked, gzip", "", true, chunk("a", "") + chunk("b", "stop") + "data: [DONE]\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := make(chan struct{})
			heldBack := make(chan bool, 1)
			up := newSocketUpstream(t, func(conn io.Writer, _ []byte) {
				w, flush := conn, func() {}
				if tt.gzip {
					io.WriteString(conn, head("200 OK", "Content-Type: text/event-stream", "Content-Encoding: gzip"))
					gz := gzip.NewWriter(conn)
					defer gz.Close()
					w, flush = gz, func() { gz.Flush() }
				} else {
					io.WriteString(conn, head("200 OK", "Content-Type: text/event-stream"))
				}
				io.WriteString(w, chunk("a", ""))
				flush()
				io.WriteString(w, chunk("b", "stop")+usageChunk)
				flush()
				select {
				case <-seen:
					heldBack <- false
				case <-time.After(20 * time.Second): // deadlock guard: the test fails below
					heldBack <- true
				}
				io.WriteString(w, "data: [DONE]\n\n")
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"openai/gpt-4o","stream":true,`+tt.options+`"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+e.key)
			resp, err := rawClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got bytes.Buffer
			buf := make([]byte, 4096)
			for !strings.Contains(got.String(), `"finish_reason":"stop"`) {
				n, err := resp.Body.Read(buf)
				got.Write(buf[:n])
				if err != nil {
					t.Fatalf("stream ended before the finish chunk: %v", err)
				}
			}
			close(seen)
			rest, _ := io.ReadAll(resp.Body)
			got.Write(rest)
			if <-heldBack {
				t.Error("the finish chunk reached the client only with [DONE]")
			}
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
		})
	}
}

// interimProvider answers with an interim status, as a custom RoundTripper might hand on.
type interimProvider struct{ status int }

func (p interimProvider) Chat(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return &provider.Response{StatusCode: p.status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"error":"continue"}`)), ContentLength: -1}, nil
}

// Item 5: a 1xx never becomes the client's answer: it is an upstream protocol error.
func TestInterimStatusIsNotAnAnswer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  int
		request string
	}{
		{"100 Continue", 100, jsonRequest},
		{"103 Early Hints", 103, jsonRequest},
		{"100 Continue on a stream", 100, streamRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, []loom.Route{{Name: "openai", Provider: interimProvider{tt.status}}})
			resp, got := e.send(t, tt.request)
			var eb errorBody
			json.Unmarshal(got, &eb)
			gotAnswer := [3]string{fmt.Sprint(resp.StatusCode), eb.Error.Type, deref(eb.Error.Code)}
			if diff := cmp.Diff([3]string{"502", "upstream_error", "upstream_protocol_error"}, gotAnswer); diff != "" {
				t.Errorf("answer (-want +got):\n%s\n%s", diff, got)
			}
			want := traceOf{Status: 502, ErrorType: "upstream_error", UsageSource: tracing.UsageMissing}
			if diff := cmp.Diff(want, e.lastTrace(t, 1)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}

// Item 6: SSE with bare "\r" or "\r\n" line endings is relayed event by event, as sent,
// and its usage and [DONE] are read.
func TestStreamLineEndings(t *testing.T) {
	for _, tt := range []struct{ name, eol string }{
		{"LF", "\n"}, {"CRLF", "\r\n"}, {"bare CR", "\r"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eol := func(s string) string { return strings.ReplaceAll(s, "\n", tt.eol) }
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream")+eol(chunk("a", "")+chunk("b", "stop")+usageChunk+"data: [DONE]\n\n"))
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			_, got := e.send(t, streamRequest)
			if diff := cmp.Diff(eol(chunk("a", "")+chunk("b", "stop")+"data: [DONE]\n\n"), string(got)); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
			want := traceOf{Status: 200, UsageSource: tracing.UsageReported, PromptTokens: 9, CompletionTokens: 2, ServedModel: "gpt-4o-2024"}
			if diff := cmp.Diff(want, e.lastTrace(t, 1)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}

// Item 8: the routed model name reaches the upstream as valid JSON, whatever characters it
// holds.
func TestModelNameQuoting(t *testing.T) {
	for _, tt := range []struct {
		name, model string // as the client writes it in JSON
		want        string // the model the upstream decodes
	}{
		{"control characters", `openai/gpt\u007f\u000b\u0000`, "gpt\x7f\v\x00"},
		{"invalid UTF-8", "openai/gpt\xff\xfe", "gpt\ufffd\ufffd"},
		{"line separators", "openai/gpt\u2028\u2029", "gpt\u2028\u2029"},
		{"quotes and HTML", `openai/\"<b>&`, `"<b>&`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: application/json")+completion)
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			resp, got := e.send(t, `{"model":"`+tt.model+`","messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			body := up.lastBody(t)
			var sent struct {
				Model string `json:"model"`
			}
			if err := json.Unmarshal(body, &sent); err != nil || !json.Valid(body) {
				t.Fatalf("upstream body is not JSON (%v): %q", err, body)
			}
			if sent.Model != tt.want {
				t.Errorf("upstream model = %q, want %q", sent.Model, tt.want)
			}
		})
	}
}

// Item 9: include_usage is read however its name is escaped, so an asked-for usage chunk
// is not stripped.
func TestIncludeUsageEscaped(t *testing.T) {
	stream := chunk("a", "stop") + usageChunk + "data: [DONE]\n\n"
	for _, tt := range []struct {
		name, options string
		want          string
	}{
		{"plain", `{"include_usage":true}`, stream},
		{"escaped", `{"\u0069nclude_usage":true}`, stream},
		{"escaped false", `{"\u0069nclude_usage":false}`, chunk("a", "stop") + "data: [DONE]\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream")+stream)
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			_, got := e.send(t, `{"model":"openai/gpt-4o","stream":true,"stream_options":`+tt.options+`,"messages":[{"role":"user","content":"hi"}]}`)
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
		})
	}
}

// Item 10: a stream that ends without [DONE] ends with an error event for the client and
// is traced as interrupted.
func TestStreamWithoutDone(t *testing.T) {
	interrupted := `data: {"error":{"message":"The upstream provider's stream broke off before it was complete.","type":"upstream_error","param":null,"code":"upstream_stream_interrupted"}}` + "\n\n"
	full := anthropicSSE(`{}`)
	cut := full[:strings.LastIndex(full, "event: message_stop")]
	for _, tt := range []struct {
		name, upstream string
		want           string
		wantError      string
	}{
		{"anthropic complete", full, "data: [DONE]\n\n", ""},
		{"anthropic closed before message_stop", cut, interrupted, "upstream_error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream")+tt.upstream)
			})
			e := newEnv(t, []loom.Route{{Name: "anthropic", Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: up.URL})}})
			_, got := e.send(t, `{"model":"anthropic/claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			if !strings.HasSuffix(string(got), tt.want) || strings.Count(string(got), "[DONE]") > 1 {
				t.Errorf("client body does not end with %q:\n%s", tt.want, got)
			}
			if tr := e.lastTrace(t, 1); tr.Status != 200 || tr.ErrorType != tt.wantError {
				t.Errorf("trace = %+v, want status 200, error %q", tr, tt.wantError)
			}
		})
	}
	for _, tt := range []struct {
		name, upstream string
		want           string
		wantError      string
	}{
		{"closed after chunks", chunk("a", "") + chunk("b", "stop"), chunk("a", "") + chunk("b", "stop") + interrupted, "upstream_error"},
		{"closed mid-event", chunk("a", "") + `data: {"id":"c1"`, chunk("a", "") + `data: {"id":"c1"` + interrupted, "upstream_error"},
		{"closed before any chunk", "", interrupted, "upstream_error"},
		{"complete", chunk("a", "stop") + "data: [DONE]\n\n", chunk("a", "stop") + "data: [DONE]\n\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream")+tt.upstream)
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			_, got := e.send(t, streamRequest)
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("client body (-want +got):\n%s", diff)
			}
			if tr := e.lastTrace(t, 1); tr.Status != 200 || tr.ErrorType != tt.wantError {
				t.Errorf("trace = %+v, want status 200, error %q", tr, tt.wantError)
			}
		})
	}
}

// Item 11: a 200 whose body is an error is traced as one; a JSON request answered with a
// stream gets the stream, labelled and metered as such.
func TestOdd200Answers(t *testing.T) {
	errBody := `{"error":{"message":"model overloaded","type":"server_error"}}`
	sse := chunk("hi", "stop") + usageChunk + "data: [DONE]\n\n"
	for _, tt := range []struct {
		name, contentType, upstream string
		wantContentType             string
		want                        traceOf
	}{
		{"error body", "application/json", errBody, "application/json",
			traceOf{Status: 200, ErrorType: "upstream_error", UsageSource: tracing.UsageMissing}},
		{"stream for a JSON request", "text/event-stream; charset=utf-8", sse, "text/event-stream",
			traceOf{Status: 200, UsageSource: tracing.UsageReported, PromptTokens: 9, CompletionTokens: 2, ServedModel: "gpt-4o-2024"}},
		{"plain completion", "application/json", completion, "application/json",
			traceOf{Status: 200, UsageSource: tracing.UsageReported, PromptTokens: 9, CompletionTokens: 2, ServedModel: "gpt-4o-2024"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: "+tt.contentType)+tt.upstream)
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			resp, got := e.send(t, jsonRequest)
			gotAnswer := [3]string{fmt.Sprint(resp.StatusCode), resp.Header.Get("Content-Type"), string(got)}
			if diff := cmp.Diff([3]string{"200", tt.wantContentType, tt.upstream}, gotAnswer); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, e.lastTrace(t, 1)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}

// Item 12: an upstream error that is not OpenAI-shaped keeps a bounded excerpt of the
// upstream's own message.
func TestUpstreamErrorExcerpt(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	for _, tt := range []struct {
		name, status, contentType, body string
		wantMessage                     string
	}{
		{"error string", "404 Not Found", "application/json", `{"error":"model 'llama9' not found"}`,
			"The upstream provider answered 404 Not Found: model 'llama9' not found"},
		{"error object without type", "400 Bad Request", "application/json", `{"error":{"message":"bad input","type":7}}`,
			"The upstream provider answered 400 Bad Request: bad input"},
		{"FastAPI detail string", "401 Unauthorized", "application/json", `{"detail":"Not authenticated"}`,
			"The upstream provider answered 401 Unauthorized: Not authenticated"},
		{"FastAPI validation list", "422 Unprocessable Entity", "application/json",
			`{"detail":[{"loc":["body","messages",0],"msg":"field required","type":"missing"},{"loc":["body","model"],"msg":"bad"}]}`,
			"The upstream provider answered 422 Unprocessable Entity: body.messages.0: field required; body.model: bad"},
		{"message member", "500 Internal Server Error", "application/json", `{"message":"boom"}`,
			"The upstream provider answered 500 Internal Server Error: boom"},
		{"plain text", "503 Service Unavailable", "text/plain", "upstream\x00 busy\n\tretry\xff",
			"The upstream provider answered 503 Service Unavailable: upstream busy retry\ufffd"},
		{"HTML", "502 Bad Gateway", "text/html", "<html><head><title>502 Bad Gateway</title><style>p{}</style></head><body><h1>Bad <b>Gateway</b></h1></body></html>",
			"The upstream provider answered 502 Bad Gateway: 502 Bad Gateway Bad Gateway"},
		{"long", "400 Bad Request", "text/plain", long,
			"The upstream provider answered 400 Bad Request: " + long[:508] + "…"},
		{"nothing to say", "404 Not Found", "application/json", `{"status":404}`,
			"The upstream provider answered 404 Not Found."},
		{"gzip", "404 Not Found", "application/json", "gzip:" + `{"error":"model 'llama9' not found"}`,
			"The upstream provider answered 404 Not Found: model 'llama9' not found"},
		{"gzip OpenAI error", "429 Too Many Requests", "application/json", "gzip:" + `{"error":{"message":"slow down","type":"rate_limit"}}`,
			"slow down"},
		{"brotli", "404 Not Found", "application/json", "br:" + `{"error":"model 'llama9' not found"}`,
			"The upstream provider answered 404 Not Found."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body, enc := tt.body, []string{}
			if e, plain, ok := strings.Cut(body, ":"); ok && (e == "gzip" || e == "br") {
				body, enc = string(compress(t, e, []byte(plain))), []string{"Content-Encoding: " + e}
			}
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head(tt.status, append(enc, "Content-Type: "+tt.contentType, fmt.Sprintf("Content-Length: %d", len(body)))...)+body)
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			resp, got := e.send(t, jsonRequest)
			var eb errorBody
			if err := json.Unmarshal(got, &eb); err != nil {
				t.Fatalf("answer is not JSON: %q", got)
			}
			if diff := cmp.Diff(tt.wantMessage, eb.Error.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			wantType := "upstream_error" // unless the upstream's OpenAI error names one
			if strings.Contains(tt.body, `"type":"rate_limit"`) {
				wantType = "rate_limit"
			}
			if status, _, _ := strings.Cut(tt.status, " "); fmt.Sprint(resp.StatusCode) != status || eb.Error.Type != wantType {
				t.Errorf("status %d, type %q, want %s %s", resp.StatusCode, eb.Error.Type, status, wantType)
			}
		})
	}
}

// anthropicSSE is an Anthropic Messages stream with one tool call whose argument deltas
// are args (none: the tool takes no arguments).
func anthropicSSE(args ...string) string {
	var b strings.Builder
	ev := func(name, data string) { b.WriteString("event: " + name + "\ndata: " + data + "\n\n") }
	ev("message_start", `{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"output_tokens":1}}}`)
	ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}`)
	for _, a := range args {
		q, _ := json.Marshal(a)
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":`+string(q)+`}}`)
	}
	ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
	ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}`)
	ev("message_stop", `{"type":"message_stop"}`)
	return b.String()
}

// Item 3: a streamed Anthropic tool call without arguments gets "{}", as the whole answer
// does, and one with arguments gets exactly them.
func TestAnthropicStreamedToolArguments(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no arguments", nil, "{}"},
		{"empty delta only", []string{""}, "{}"},
		{"arguments", []string{`{"tz":`, `"UTC"}`}, `{"tz":"UTC"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeUpstream(t, http.StatusOK, []byte(anthropicSSE(tt.args...)))
			e := newEnv(t, []loom.Route{anthropicRoute(up)})
			s := e.client().Chat.Completions.NewStreaming(context.Background(), anthropicParams("anthropic/claude-x"))
			var acc openai.ChatCompletionAccumulator
			for s.Next() {
				acc.AddChunk(s.Current())
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if len(acc.Choices) != 1 || len(acc.Choices[0].Message.ToolCalls) != 1 {
				t.Fatalf("choices = %+v", acc.Choices)
			}
			if got := acc.Choices[0].Message.ToolCalls[0].Function.Arguments; got != tt.want {
				t.Errorf("arguments = %q, want %q", got, tt.want)
			}
			if tr := e.lastTrace(t, 1); tr.ErrorType != "" || tr.UsageSource != tracing.UsageReported || tr.CompletionTokens != 5 {
				t.Errorf("trace = %+v", tr)
			}
		})
	}
}

// Item 7 and the Anthropic "also" items: the request members that do not map one to one.
// OpenAI's temperature runs 0–2, Anthropic's 0–1: values above 1 are clamped to 1; a
// data URL's media type loses its parameters; a client's "Stream_Options" does not switch
// off the usage Loom asked for.
func TestAnthropicRequestMapping(t *testing.T) {
	const msg = `"messages":[{"role":"user","content":"hi"}]`
	image := func(url string) string {
		return `"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"` + url + `"}}]}]`
	}
	for _, tt := range []struct {
		name, request string
		member        string // of the Anthropic request
		want          any
		wantUsage     bool // the client got a usage chunk
	}{
		{"temperature 0", `"temperature":0,` + msg, "temperature", 0.0, false},
		{"temperature 0.7", `"temperature":0.7,` + msg, "temperature", 0.7, false},
		{"temperature 1.5", `"temperature":1.5,` + msg, "temperature", 1.0, false},
		{"temperature 2", `"temperature":2,` + msg, "temperature", 1.0, false},
		{"data URL with parameters", image("data:image/JPEG;charset=utf-8;base64,AAAA"), "messages",
			[]any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "image",
				"source": map[string]any{"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}}}}, false},
		{"Stream_Options false", `"Stream_Options":{"include_usage":false},` + msg, "stream", true, false},
		{"stream_options true", `"stream_options":{"include_usage":true},` + msg, "stream", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeUpstream(t, http.StatusOK, []byte(anthropicSSE()))
			e := newEnv(t, []loom.Route{anthropicRoute(up)})
			_, got := e.send(t, `{"model":"anthropic/claude-x","stream":true,`+tt.request+`}`)
			if diff := cmp.Diff(tt.want, up.lastCall(t).Body[tt.member]); diff != "" {
				t.Errorf("upstream %s (-want +got):\n%s", tt.member, diff)
			}
			if usage := strings.Contains(string(got), `"usage"`); usage != tt.wantUsage {
				t.Errorf("usage chunk sent: %v, want %v\n%s", usage, tt.wantUsage, got)
			}
			if tr := e.lastTrace(t, 1); tr.UsageSource != tracing.UsageReported || tr.PromptTokens != 10 {
				t.Errorf("trace = %+v, want the reported usage", tr)
			}
		})
	}
	t.Run("temperature above 2", func(t *testing.T) {
		up := newFakeUpstream(t, http.StatusOK, []byte(anthropicSSE()))
		e := newEnv(t, []loom.Route{anthropicRoute(up)})
		resp, got := e.send(t, `{"model":"anthropic/claude-x","temperature":2.5,`+msg+`}`)
		var eb errorBody
		json.Unmarshal(got, &eb)
		if resp.StatusCode != 400 || deref(eb.Error.Param) != "temperature" {
			t.Errorf("status %d: %s, want 400 on temperature", resp.StatusCode, got)
		}
	})
}

// Item 2 on the Anthropic route: a compressed answer is decoded before it is translated;
// one Loom cannot decode cannot be translated and is a 502.
func TestAnthropicCompressed(t *testing.T) {
	for _, tt := range []struct {
		name, encoding string
		wantStatus     int
		want           traceOf
	}{
		{"gzip", "gzip", 200, traceOf{Status: 200, UsageSource: tracing.UsageReported, PromptTokens: 10, CompletionTokens: 5, ServedModel: "claude-x"}},
		{"brotli", "br", 502, traceOf{Status: 502, ErrorType: "upstream_error", UsageSource: tracing.UsageMissing}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := compress(t, tt.encoding, []byte(anthropicSSE(`{}`)))
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: text/event-stream", "Content-Encoding: "+tt.encoding)+string(body))
			})
			e := newEnv(t, []loom.Route{{Name: "anthropic", Provider: provider.NewAnthropic(provider.AnthropicConfig{BaseURL: up.URL})}})
			resp, got := e.send(t, `{"model":"anthropic/claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, got)
			}
			if tt.wantStatus == 200 && !strings.HasSuffix(string(got), `"finish_reason":"tool_calls"}]}`+"\n\ndata: [DONE]\n\n") {
				t.Errorf("client body does not end with the finish and [DONE]:\n%s", got)
			}
			if diff := cmp.Diff(tt.want, e.lastTrace(t, 1)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}

// Item 2, hostile bodies: a corrupt compressed answer, or one that unpacks to more than
// Loom holds, is an upstream protocol error, not an unreachable upstream.
func TestCompressedUpstreamRefused(t *testing.T) {
	bomb := compress(t, "gzip", make([]byte, 64<<20+1)) // 64 MiB of zeros, plus one byte
	for _, tt := range []struct {
		name, encoding string
		body           []byte
	}{
		{"corrupt gzip", "gzip", []byte("<html>not gzip</html>")},
		{"corrupt gzip data", "gzip", append(compress(t, "gzip", []byte(completion))[:12], "garbage garbage garbage"...)},
		{"corrupt deflate", "deflate", []byte{0xff, 0xff, 0xff, 0xff}},
		{"decompression bomb", "gzip", bomb},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newSocketUpstream(t, func(w io.Writer, _ []byte) {
				io.WriteString(w, head("200 OK", "Content-Type: application/json", "Content-Encoding: "+tt.encoding,
					fmt.Sprintf("Content-Length: %d", len(tt.body)))+string(tt.body))
			})
			e := newEnv(t, []loom.Route{socketOpenAIRoute(up)})
			resp, got := e.send(t, jsonRequest)
			var eb errorBody
			json.Unmarshal(got, &eb)
			gotAnswer := [3]string{fmt.Sprint(resp.StatusCode), resp.Header.Get("Content-Encoding"), deref(eb.Error.Code)}
			if diff := cmp.Diff([3]string{"502", "", "upstream_protocol_error"}, gotAnswer); diff != "" {
				t.Errorf("answer (-want +got):\n%s\n%s", diff, got)
			}
			want := traceOf{Status: 502, ErrorType: "upstream_error", UsageSource: tracing.UsageMissing}
			if diff := cmp.Diff(want, e.lastTrace(t, 1)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}
