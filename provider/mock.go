package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MockConfig configures the mock provider.
type MockConfig struct {
	// ChunkDelay is the pause between stream chunks. Zero sends them at once.
	ChunkDelay time.Duration
	// Now stamps the "created" field. If nil, time.Now is used.
	Now func() time.Time
}

// Mock answers every chat completion itself, deterministically, in the OpenAI wire
// format: it echoes the last user message. It needs no network, so a gateway with no
// upstream configured still works end to end, and tests get reproducible answers.
type Mock struct {
	cfg MockConfig
}

var _ Provider = (*Mock)(nil)

// NewMock returns a mock provider.
func NewMock(cfg MockConfig) *Mock {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Mock{cfg: cfg}
}

// MockReply is the answer the mock gives to a conversation whose last message is prompt.
func MockReply(prompt string) string {
	return "This is Loom's mock provider. You said: " + prompt
}

// Chat implements Provider.
func (m *Mock) Chat(ctx context.Context, req *Request) (*Response, error) {
	var in struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(req.Body, &in); err != nil || len(in.Messages) == 0 {
		return nil, &UpstreamError{StatusCode: http.StatusBadRequest,
			Body: ErrorJSON("mock: the request needs messages", "invalid_request_error", "messages", "")}
	}
	var prompt string
	if json.Unmarshal(in.Messages[len(in.Messages)-1].Content, &prompt) != nil {
		prompt = "(non-text content)"
	}
	reply := MockReply(prompt)
	words := strings.SplitAfter(reply, " ")
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}`,
		len(req.Body)/4, len(words), len(req.Body)/4+len(words))
	id := "chatcmpl-mock" + strconv.FormatInt(m.cfg.Now().UnixNano(), 36)
	created := strconv.FormatInt(m.cfg.Now().Unix(), 10)
	model, _ := json.Marshal(req.Model)
	head := func(object string) string {
		return `{"id":"` + id + `","object":"` + object + `","created":` + created + `,"model":` + string(model)
	}

	if !req.Stream {
		content, _ := json.Marshal(reply)
		body := head("chat.completion") + `,"choices":[{"index":0,"message":{"role":"assistant","content":` +
			string(content) + `},"finish_reason":"stop"}],"usage":` + usage + `}`
		return &Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}, nil
	}

	chunk := head("chat.completion.chunk")
	var events [][]byte
	add := func(rest string) {
		events = append(events, []byte("data: "+chunk+rest+"}\n\n"))
	}
	add(`,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`)
	for _, w := range words {
		content, _ := json.Marshal(w)
		add(`,"choices":[{"index":0,"delta":{"content":` + string(content) + `},"finish_reason":null}]`)
	}
	add(`,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`)
	if in.StreamOptions.IncludeUsage {
		add(`,"choices":[],"usage":` + usage)
	}
	events = append(events, []byte("data: [DONE]\n\n"))
	return &Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: &eventReader{ctx: ctx, events: events, delay: m.cfg.ChunkDelay}, ContentLength: -1}, nil
}

// eventReader yields one SSE event per Read, pausing between events.
type eventReader struct {
	ctx    context.Context
	events [][]byte
	cur    bytes.Reader
	delay  time.Duration
	began  bool
}

func (r *eventReader) Read(p []byte) (int, error) {
	if r.cur.Len() == 0 {
		if len(r.events) == 0 {
			return 0, io.EOF
		}
		if r.began && r.delay > 0 {
			t := time.NewTimer(r.delay)
			select {
			case <-r.ctx.Done():
				t.Stop()
				return 0, r.ctx.Err()
			case <-t.C:
			}
		}
		r.began = true
		r.cur.Reset(r.events[0])
		r.events = r.events[1:]
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.cur.Read(p)
}

func (r *eventReader) Close() error { return nil }
