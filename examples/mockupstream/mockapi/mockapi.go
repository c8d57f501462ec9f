// Package mockapi is a canned, fast OpenAI-compatible chat completions API: the upstream
// Loom's benchmarks put behind the gateway, and measure directly as the baseline.
//
// It answers POST /v1/chat/completions (also /chat/completions, /openai/v1/chat/completions
// and Azure's /openai/deployments/{deployment}/chat/completions) with a realistic
// chat.completion or, for "stream": true, an SSE stream: a role chunk, Config.Chunks
// content chunks, a finish chunk, a usage chunk ("choices": []) only when
// stream_options.include_usage is true, then data: [DONE]. Every streamed chunk carries an
// extra member "loom_sent_ns", the Unix time in nanoseconds at which it was written, so a
// load generator on the same host can measure the delay each chunk took through a gateway.
// GET /v1/models lists a few model ids.
//
// The answers are assembled by appending bytes to pooled buffers around parts computed
// once in New; only the request is decoded with encoding/json, to reject bodies a real
// upstream would reject (400 with an OpenAI error body).
package mockapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config shapes the answers. Its zero value answers at once with 16 chunks of 8 bytes.
type Config struct {
	// Latency is waited before answering anything (before the response headers).
	// Zero answers at once.
	Latency time.Duration
	// Chunks is the number of content chunks in a stream; the non-streaming content is
	// the same pieces joined. Zero or less means 16.
	Chunks int
	// ChunkDelay is waited before each content chunk of a stream. Zero sends the chunks
	// back to back (each still written and flushed on its own).
	ChunkDelay time.Duration
	// ChunkBytes is the length of each chunk's content in bytes. Zero or less means 8.
	ChunkBytes int
	// Now returns the current time, for "created" and "loom_sent_ns". If nil, time.Now
	// is used.
	Now func() time.Time
}

// MaxBodyBytes is the largest request body accepted; larger bodies get 413.
const MaxBodyBytes = 4 << 20

// Fingerprint is the system_fingerprint of every answer.
const Fingerprint = "fp_loom_mock"

// Handler is the API. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	now    func() time.Time
	mux    *http.ServeMux
	seq    atomic.Uint64
	pieces [][]byte // each chunk's content, plain ASCII that needs no JSON escaping
	joined []byte   // the pieces joined: the non-streaming content
	bufs   sync.Pool
}

// New returns the API for cfg.
func New(cfg Config) *Handler {
	if cfg.Chunks <= 0 {
		cfg.Chunks = 16
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 8
	}
	h := &Handler{cfg: cfg, now: cfg.Now}
	if h.now == nil {
		h.now = time.Now
	}
	const words = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod " +
		"tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis " +
		"nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
	n := cfg.Chunks * cfg.ChunkBytes
	h.joined = []byte(strings.Repeat(words, n/len(words)+1)[:n])
	for i := range cfg.Chunks {
		h.pieces = append(h.pieces, h.joined[i*cfg.ChunkBytes:(i+1)*cfg.ChunkBytes])
	}
	h.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }

	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST /v1/chat/completions", h.chat)
	h.mux.HandleFunc("POST /chat/completions", h.chat)
	h.mux.HandleFunc("POST /openai/v1/chat/completions", h.chat)
	h.mux.HandleFunc("POST /openai/deployments/{deployment}/chat/completions", h.chat)
	h.mux.HandleFunc("GET /v1/models", h.models)
	h.mux.HandleFunc("GET /models", h.models)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "",
			"Invalid URL ("+r.Method+" "+r.URL.Path+")")
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// chatRequest holds the members the mock reads. Messages stays raw: it is only checked to
// be a non-empty array, and decoding it further would cost allocations for nothing.
type chatRequest struct {
	Model         string          `json:"model"`
	Messages      json.RawMessage `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	bp := h.bufs.Get().(*[]byte)
	defer h.bufs.Put(bp)
	body, err := readBody(http.MaxBytesReader(w, r.Body, MaxBodyBytes), (*bp)[:0])
	*bp = body[:0]
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "",
				"Request body too large: the limit is "+strconv.Itoa(MaxBodyBytes)+" bytes.")
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "Could not read the request body.")
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"We could not parse the JSON body of your request. ("+err.Error()+")")
		return
	}
	if req.Model == "" {
		req.Model = r.PathValue("deployment")
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model",
			"you must provide a model parameter")
		return
	}
	if !nonEmptyArray(req.Messages) {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages",
			"'messages' must be a non-empty array.")
		return
	}

	if h.cfg.Latency > 0 && !sleep(r, h.cfg.Latency) {
		return
	}
	u := usage{prompt: (len(body) + 3) / 4, completion: len(h.pieces)}
	seq := h.seq.Add(1)
	hdr := w.Header()
	hdr["X-Request-Id"] = []string{"req_mock" + strconv.FormatUint(seq, 10)}
	hdr["X-Ratelimit-Limit-Requests"] = rateLimitRequests
	hdr["X-Ratelimit-Remaining-Requests"] = rateLimitRemaining
	if req.Stream {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		h.stream(w, r, body[:0], seq, req.Model, includeUsage, u)
		return
	}
	out := h.appendCompletion(body[:0], seq, req.Model, u)
	*bp = out[:0]
	hdr["Content-Type"] = contentTypeJSON
	hdr["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.Write(out)
}

var (
	contentTypeJSON    = []string{"application/json"}
	contentTypeSSE     = []string{"text/event-stream; charset=utf-8"}
	noCache            = []string{"no-cache"}
	rateLimitRequests  = []string{"10000"}
	rateLimitRemaining = []string{"9999"}
)

type usage struct{ prompt, completion int }

func (h *Handler) appendCompletion(b []byte, seq uint64, model string, u usage) []byte {
	b = append(b, `{"id":"chatcmpl-mock`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, h.now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = appendString(b, model)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	b = append(b, h.joined...)
	b = append(b, `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	b = appendUsage(b, u)
	b = append(b, `,"service_tier":"default","system_fingerprint":"`+Fingerprint+`"}`+"\n"...)
	return b
}

func appendUsage(b []byte, u usage) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt+u.completion), 10)
	return append(b, `,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},`+
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,`+
		`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

// stream writes the SSE answer, one write and one flush per event, like OpenAI.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, b []byte, seq uint64, model string, includeUsage bool, u usage) {
	hdr := w.Header()
	hdr["Content-Type"] = contentTypeSSE
	hdr["Cache-Control"] = noCache
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)

	// prefix is the part every chunk shares, up to the choices array.
	prefix := append([]byte(`data: {"id":"chatcmpl-mock`), strconv.AppendUint(nil, seq, 10)...)
	prefix = append(prefix, `","object":"chat.completion.chunk","created":`...)
	prefix = strconv.AppendInt(prefix, h.now().Unix(), 10)
	prefix = append(prefix, `,"model":`...)
	prefix = appendString(prefix, model)
	prefix = append(prefix, `,"service_tier":"default","system_fingerprint":"`+Fingerprint+`","choices":[`...)

	send := func(choices string, content []byte, rest string) bool {
		b = append(b[:0], prefix...)
		b = append(b, choices...)
		if content != nil {
			b = append(b, content...)
			b = append(b, `"},"logprobs":null,"finish_reason":null}]`...)
		}
		b = append(b, rest...)
		if includeUsage && rest == "" {
			b = append(b, `,"usage":null`...)
		}
		b = append(b, `,"loom_sent_ns":`...)
		b = strconv.AppendInt(b, h.now().UnixNano(), 10)
		b = append(b, "}\n\n"...)
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}

	if !send(`{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`, nil, "") {
		return
	}
	for _, p := range h.pieces {
		if h.cfg.ChunkDelay > 0 && !sleep(r, h.cfg.ChunkDelay) {
			return
		}
		if !send(`{"index":0,"delta":{"content":"`, p, "") {
			return
		}
	}
	if !send(`{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, nil, "") {
		return
	}
	if includeUsage {
		if !send(`]`, nil, `,"usage":`+string(appendUsage(nil, u))) {
			return
		}
	}
	if _, err := w.Write([]byte("data: [DONE]\n\n")); err != nil {
		return
	}
	rc.Flush()
}

var modelsBody = []byte(`{"object":"list","data":[` +
	`{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},` +
	`{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},` +
	`{"id":"gpt-4.1-mini","object":"model","created":1744318173,"owned_by":"system"}]}` + "\n")

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(modelsBody))}
	w.Write(modelsBody)
}

// writeError answers an OpenAI-style error body.
func writeError(w http.ResponseWriter, status int, typ, param, msg string) {
	var p any
	if param != "" {
		p = param
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": p, "code": nil,
	}})
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// readBody reads r to its end, appending to b.
func readBody(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// nonEmptyArray reports whether raw (valid JSON, as json.Unmarshal left it) is an array
// with at least one element.
func nonEmptyArray(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '[' {
		return false
	}
	return len(bytes.TrimSpace(raw[1:len(raw)-1])) > 0
}

// sleep waits d or until the client leaves; it reports whether d passed.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// appendString appends s as a JSON string. s came out of encoding/json, so it is valid
// UTF-8; only quotes, backslashes and control characters need escaping.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
