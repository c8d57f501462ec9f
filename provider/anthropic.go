package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/loom-gateway/loom/internal/sse"
)

// AnthropicConfig configures an Anthropic Messages API upstream.
type AnthropicConfig struct {
	// BaseURL is the API root (a trailing /v1 is tolerated). If empty,
	// https://api.anthropic.com is used.
	BaseURL string
	// APIKey is sent in the x-api-key header.
	APIKey string
	// Version is sent as anthropic-version. If empty, 2023-06-01 is used.
	Version string
	// MaxTokens is the max_tokens sent when the request sets neither max_completion_tokens
	// nor max_tokens (Anthropic requires one). If zero, 4096.
	MaxTokens int
	// ClientHeaders lists the client request headers passed on: only "Anthropic-Beta"
	// means anything to Anthropic. If nil, none: a client cannot switch on beta features
	// (some billed differently) on the operator's account.
	ClientHeaders []string
	// Client sends the requests. If nil, a client over a Transport is used. Redirects are
	// never followed.
	Client *http.Client
	// Now stamps the "created" field of answers. If nil, time.Now is used.
	Now func() time.Time
}

// Anthropic is the adapter for Anthropic's Messages API. Unlike the OpenAI-compatible
// adapters it is not a passthrough: the OpenAI chat completion request is decoded and
// rewritten as a Messages request, and the answer — JSON body, SSE stream or error — is
// rewritten in the OpenAI wire format, so the gateway relays it like any other.
//
// What is translated: text content (string or text parts), image parts (data URLs and
// http(s) URLs), system and developer messages (joined into the top-level system prompt),
// assistant tool calls, tool results, tools, tool_choice, parallel_tool_calls,
// max_completion_tokens/max_tokens, temperature (clamped to Anthropic's 0–1), top_p, stop
// and user. Other OpenAI parameters (response_format, seed, logprobs, penalties,
// reasoning_effort…) are ignored; n > 1 and content parts Anthropic cannot take (audio,
// files) are refused.
type Anthropic struct {
	url       string
	header    upstreamHeader
	maxTokens int
	client    *http.Client
	now       func() time.Time
}

var _ Provider = (*Anthropic)(nil)

// NewAnthropic returns an Anthropic adapter.
func NewAnthropic(cfg AnthropicConfig) *Anthropic {
	base := strings.TrimSuffix(strings.TrimRight(cfg.BaseURL, "/"), "/v1")
	if base == "" {
		base = "https://api.anthropic.com"
	}
	version := cfg.Version
	if version == "" {
		version = "2023-06-01"
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Anthropic-Version", version)
	if cfg.APIKey != "" {
		h.Set("X-Api-Key", cfg.APIKey)
	}
	maxTokens := cfg.MaxTokens
	if maxTokens <= 0 {
		maxTokens = 4096
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Anthropic{url: base + "/v1/messages", header: newUpstreamHeader(h, cfg.ClientHeaders), maxTokens: maxTokens, client: clientOr(cfg.Client), now: now}
}

// overloadedRetryAfter is the Retry-After sent with the 503 that stands for Anthropic's
// 529 (overloaded) when Anthropic gave none.
const overloadedRetryAfter = "1"

// Chat implements Provider.
func (p *Anthropic) Chat(ctx context.Context, req *Request) (*Response, error) {
	body, includeUsage, err := anthropicRequestBody(req.Body, req.Model, req.Stream, p.maxTokens)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	hr.Header = p.header.For(req.Header)
	resp, err := do(p.client, hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("provider: read error body: %w", err)
		}
		return nil, anthropicError(resp, b)
	}
	// The answer is translated, so it must be read: a compressed one is decoded, one in
	// an encoding Loom cannot decode cannot be translated.
	enc := resp.Header.Get("Content-Encoding")
	decoded, ok := DecodeBody(enc, resp.Body)
	if !ok {
		resp.Body.Close()
		return nil, &UpstreamError{StatusCode: http.StatusBadGateway, Header: http.Header{}, Body: ErrorJSON(
			"The upstream provider answered in a Content-Encoding Loom cannot decode.", "upstream_error", "", "upstream_protocol_error")}
	}
	resp.Body = decoded
	header := anthropicHeader(resp.Header)
	if req.Stream {
		header.Set("Content-Type", "text/event-stream")
		s := &anthropicStream{
			body:         resp.Body,
			events:       sse.NewReader(resp.Body),
			created:      p.now().Unix(),
			includeUsage: includeUsage,
			tools:        map[int]*streamTool{},
		}
		return &Response{StatusCode: http.StatusOK, Header: header, Body: s, ContentLength: -1, Usage: &s.final}, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("provider: read body: %w", err)
	}
	out, usage, err := anthropicCompletion(b, p.now().Unix())
	if err != nil {
		return nil, err
	}
	header.Set("Content-Type", "application/json")
	return &Response{StatusCode: http.StatusOK, Header: header, Body: io.NopCloser(bytes.NewReader(out)), ContentLength: int64(len(out)), Usage: usage}, nil
}

// anthropicHeader keeps the response headers worth passing on, Anthropic's rate limits
// renamed to OpenAI's (their reset times differ in format and are left out).
func anthropicHeader(h http.Header) http.Header {
	out := http.Header{}
	for from, to := range map[string]string{
		"Anthropic-Ratelimit-Requests-Limit":     "X-Ratelimit-Limit-Requests",
		"Anthropic-Ratelimit-Requests-Remaining": "X-Ratelimit-Remaining-Requests",
		"Anthropic-Ratelimit-Tokens-Limit":       "X-Ratelimit-Limit-Tokens",
		"Anthropic-Ratelimit-Tokens-Remaining":   "X-Ratelimit-Remaining-Tokens",
		"Retry-After":                            "Retry-After",
		"Request-Id":                             "Request-Id",
	} {
		if v := h.Get(from); v != "" {
			out.Set(to, v)
		}
	}
	return out
}

// anthropicError turns Anthropic's error answer into an *UpstreamError carrying an OpenAI
// error body. A 529 (overloaded) becomes a 503 with Retry-After, a status the OpenAI SDKs
// know to retry.
func anthropicError(resp *http.Response, body []byte) *UpstreamError {
	e := &UpstreamError{StatusCode: resp.StatusCode, Header: anthropicHeader(resp.Header), Body: body}
	if resp.StatusCode == 529 {
		e.StatusCode = http.StatusServiceUnavailable
		if e.Header.Get("Retry-After") == "" {
			e.Header.Set("Retry-After", overloadedRetryAfter)
		}
	}
	var in struct {
		Error *anthropicErrorDetail `json:"error"`
	}
	if b, ok := DecodeBytes(resp.Header.Get("Content-Encoding"), body, 1<<20); ok {
		e.Body = b
	} else {
		e.Body = nil // nothing a client could read
	}
	if json.Unmarshal(e.Body, &in) == nil && in.Error != nil {
		e.Body = ErrorJSON(in.Error.Message, in.Error.Type, "", "")
	}
	return e
}

type anthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}
