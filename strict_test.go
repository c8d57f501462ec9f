package loom_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/tracing"
)

// rawChat writes a chat request on a new connection to the gateway and returns the
// connection, for the test to read the answer byte by byte.
func rawChat(t *testing.T, e *env, body string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: loom\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", e.key, len(body), body)
	return conn
}

// readFor reads whatever arrives on conn within d. The strict tests use it to show that
// nothing arrives while a trace is held from the disk: bytes written before would already
// be in the loopback buffer, so d only bounds how long the test waits for a broken
// gateway to show itself.
func readFor(t *testing.T, conn net.Conn, d time.Duration) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	defer conn.SetReadDeadline(time.Time{})
	var buf bytes.Buffer
	_, err := io.Copy(&buf, conn)
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read: %v", err)
	}
	return buf.Bytes()
}

// holdEnrich blocks the pipeline's Enrich hook, which runs on the spool writer before the
// durable append: while it is held, no trace can be on disk.
type holdEnrich struct {
	entered chan string
	release chan struct{}
	once    sync.Once
}

func newHoldEnrich() *holdEnrich {
	return &holdEnrich{entered: make(chan string, 1), release: make(chan struct{})}
}

func (h *holdEnrich) enrich(tr *tracing.Trace) {
	h.entered <- tr.ID
	<-h.release
}

func (h *holdEnrich) unblock() { h.once.Do(func() { close(h.release) }) }

func strictConfig(t *testing.T, modify func(*tracing.PipelineConfig)) func(*loom.Config) {
	dir := t.TempDir()
	return func(c *loom.Config) {
		c.Tracing.SpoolDir, c.Tracing.Strict = dir, true
		modify(&c.Tracing)
	}
}

// In strict mode the client sees no byte of a JSON answer, and no [DONE] of a stream,
// before the trace is on disk; once it is, the answer arrives whole.
func TestStrictHoldsAnswerBack(t *testing.T) {
	// A body larger than the server's write buffer: written before the trace was durable,
	// its first bytes would reach the client at once.
	big := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"` + strings.Repeat("lorem ", 10000) + `"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":3,"completion_tokens":10000,"total_tokens":10003}}`
	for _, tt := range []struct {
		name     string
		upstream []byte
		stream   bool
		held     string // what must not arrive while the trace is held
	}{
		{name: "json", upstream: []byte(big), held: "HTTP/1.1"},
		{name: "stream", upstream: fixture(t, "openai_chat_stream_include_usage.sse"), stream: true, held: "data: [DONE]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := newHoldEnrich()
			up := newFakeUpstream(t, http.StatusOK, tt.upstream)
			e := newEnv(t, []loom.Route{openAIRoute(up)}, strictConfig(t, func(c *tracing.PipelineConfig) { c.Enrich = hold.enrich }))
			t.Cleanup(hold.unblock) // before newEnv's cleanup, which waits for the handler
			conn := rawChat(t, e, fmt.Sprintf(`{"model":"gpt-4o","stream":%t,"messages":[{"role":"user","content":"hi"}]}`, tt.stream))

			id := <-hold.entered
			early := readFor(t, conn, 300*time.Millisecond)
			if bytes.Contains(early, []byte(tt.held)) {
				t.Fatalf("the client got %q while trace %s was not durable:\n%.300s", tt.held, id, early)
			}
			if tt.stream && !bytes.Contains(early, []byte(`"finish_reason":"stop"`)) {
				t.Errorf("the stream's events before [DONE] were held back too:\n%s", early)
			}
			hold.unblock()
			rest, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.gw.TraceStats().Spooled; got != 1 {
				t.Errorf("when the answer ended, Spooled = %d, want 1", got)
			}
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(early), bytes.NewReader(rest))), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != id {
				t.Errorf("status %d, X-Request-Id %q; want 200, %q", resp.StatusCode, resp.Header.Get("X-Request-Id"), id)
			}
			switch {
			case !tt.stream && string(body) != big:
				t.Errorf("JSON body of %d bytes, want the upstream's %d", len(body), len(big))
			case tt.stream && !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")):
				t.Errorf("stream does not end with [DONE]:\n%s", body)
			}
		})
	}
}

// In strict mode a trace that cannot be made durable (the spool is full) turns the answer
// into a 503 with Retry-After, or, mid-stream, into an error event instead of [DONE].
func TestStrictFailedAppend(t *testing.T) {
	up := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_nonstream_usage.json"))
	upStream := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_stream_include_usage.sse"))
	full := strictConfig(t, func(c *tracing.PipelineConfig) { c.MaxSpoolBytes = 1 })

	t.Run("json", func(t *testing.T) {
		e := newEnv(t, []loom.Route{openAIRoute(up)}, full)
		var hr *http.Response
		_, err := e.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %v, want a 503 answer", err)
		}
		hr = apiErr.Response
		if apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Code != "trace_not_durable" || hr.Header.Get("Retry-After") == "" {
			t.Errorf("status %d, code %q, Retry-After %q; want 503, trace_not_durable, set",
				apiErr.StatusCode, apiErr.Code, hr.Header.Get("Retry-After"))
		}
		if got := e.gw.TraceStats().LostSpoolFull; got != 1 {
			t.Errorf("LostSpoolFull = %d, want 1", got)
		}
	})
	t.Run("stream", func(t *testing.T) {
		e := newEnv(t, []loom.Route{openAIRoute(upStream)}, full)
		resp := e.post(t, e.key, `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		events := readEvents(t, resp.Body)
		if len(events) < 2 {
			t.Fatalf("events: %q", events)
		}
		last := string(events[len(events)-1])
		if !strings.HasPrefix(last, `data: {"error":`) || !strings.Contains(last, "trace_not_durable") {
			t.Errorf("last event %q, want the trace_not_durable error event", last)
		}
		for _, ev := range events {
			if string(ev) == "data: [DONE]" {
				t.Errorf("[DONE] sent although the trace was not durable")
			}
		}
	})
}
