package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// The OpenAI request, as far as the translation reads it.
type (
	openAIChatRequest struct {
		Messages            []openAIMessage `json:"messages"`
		MaxCompletionTokens *int            `json:"max_completion_tokens"`
		MaxTokens           *int            `json:"max_tokens"`
		Temperature         *float64        `json:"temperature"`
		TopP                *float64        `json:"top_p"`
		Stop                json.RawMessage `json:"stop"`
		Tools               []openAITool    `json:"tools"`
		ToolChoice          json.RawMessage `json:"tool_choice"`
		ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
		N                   *int            `json:"n"`
		User                string          `json:"user"`
	}
	openAIMessage struct {
		Role       string           `json:"role"`
		Content    json.RawMessage  `json:"content"`
		ToolCalls  []openAIToolCall `json:"tool_calls"`
		ToolCallID string           `json:"tool_call_id"`
	}
	openAIToolCall struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	openAITool struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	openAIPart struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
)

// The Anthropic Messages request.
type (
	anthropicRequest struct {
		Model         string               `json:"model"`
		MaxTokens     int                  `json:"max_tokens"`
		System        string               `json:"system,omitempty"`
		Messages      []anthropicMessage   `json:"messages"`
		Temperature   *float64             `json:"temperature,omitempty"`
		TopP          *float64             `json:"top_p,omitempty"`
		StopSequences []string             `json:"stop_sequences,omitempty"`
		Tools         []anthropicTool      `json:"tools,omitempty"`
		ToolChoice    *anthropicToolChoice `json:"tool_choice,omitempty"`
		Metadata      *anthropicMetadata   `json:"metadata,omitempty"`
		Stream        bool                 `json:"stream,omitempty"`
	}
	anthropicMessage struct {
		Role    string           `json:"role"`
		Content []anthropicBlock `json:"content"`
	}
	anthropicBlock struct {
		Type      string           `json:"type"`
		Text      string           `json:"text,omitempty"`
		Source    *anthropicSource `json:"source,omitempty"`
		ID        string           `json:"id,omitempty"`
		Name      string           `json:"name,omitempty"`
		Input     json.RawMessage  `json:"input,omitempty"`
		ToolUseID string           `json:"tool_use_id,omitempty"`
		Content   string           `json:"content,omitempty"`
	}
	anthropicSource struct {
		Type      string `json:"type"`
		MediaType string `json:"media_type,omitempty"`
		Data      string `json:"data,omitempty"`
		URL       string `json:"url,omitempty"`
	}
	anthropicTool struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		InputSchema json.RawMessage `json:"input_schema"`
	}
	anthropicToolChoice struct {
		Type                   string `json:"type"`
		Name                   string `json:"name,omitempty"`
		DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
	}
	anthropicMetadata struct {
		UserID string `json:"user_id"`
	}
)

func invalid(param, format string, args ...any) error {
	return &InvalidRequestError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// anthropicRequestBody translates an OpenAI chat completion request into a Messages
// request for model. It reports whether the OpenAI request asked for stream usage.
// Requests it cannot translate yield an *InvalidRequestError.
func anthropicRequestBody(body []byte, model string, stream bool, defaultMaxTokens int) ([]byte, bool, error) {
	var in openAIChatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, false, invalid("", "The request body does not fit the chat completions format: %v", err)
	}
	if in.N != nil && *in.N > 1 {
		return nil, false, invalid("n", "n: this model's provider returns one choice per request")
	}
	out := anthropicRequest{Model: model, MaxTokens: defaultMaxTokens, TopP: in.TopP, Stream: stream}
	if t := in.Temperature; t != nil {
		if *t < 0 || *t > 2 {
			return nil, false, invalid("temperature", "temperature: expected a number from 0 to 2")
		}
		// Both APIs divide the logits by the temperature, so a value means the same in
		// each; Anthropic stops at 1, so hotter requests get its hottest.
		out.Temperature = ptrTo(min(*t, 1))
	}
	switch {
	case in.MaxCompletionTokens != nil:
		out.MaxTokens = *in.MaxCompletionTokens
	case in.MaxTokens != nil:
		out.MaxTokens = *in.MaxTokens
	}
	if in.User != "" {
		out.Metadata = &anthropicMetadata{UserID: in.User}
	}

	var system []string
	for i, m := range in.Messages {
		var role string
		var blocks []anthropicBlock
		switch m.Role {
		case "system", "developer":
			text, err := contentText(m.Content)
			if err != nil {
				return nil, false, invalid("messages", "messages[%d].content: %v", i, err)
			}
			if text != "" {
				system = append(system, text)
			}
			continue
		case "user":
			b, err := contentBlocks(m.Content)
			if err != nil {
				return nil, false, invalid("messages", "messages[%d].content: %v", i, err)
			}
			role, blocks = "user", b
		case "assistant":
			b, err := contentBlocks(m.Content)
			if err != nil {
				return nil, false, invalid("messages", "messages[%d].content: %v", i, err)
			}
			for j, tc := range m.ToolCalls {
				input := []byte(strings.TrimSpace(tc.Function.Arguments))
				if len(input) == 0 {
					input = []byte("{}")
				}
				if !json.Valid(input) || input[0] != '{' {
					return nil, false, invalid("messages", "messages[%d].tool_calls[%d].function.arguments: expected a JSON object", i, j)
				}
				b = append(b, anthropicBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
			}
			role, blocks = "assistant", b
		case "tool":
			text, err := contentText(m.Content)
			if err != nil {
				return nil, false, invalid("messages", "messages[%d].content: %v", i, err)
			}
			role, blocks = "user", []anthropicBlock{{Type: "tool_result", ToolUseID: m.ToolCallID, Content: text}}
		default:
			return nil, false, invalid("messages", "messages[%d].role: %q is not supported", i, m.Role)
		}
		if len(blocks) == 0 {
			continue // Anthropic refuses empty messages
		}
		// Anthropic wants user and assistant turns to alternate: merge neighbours.
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == role {
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
			continue
		}
		out.Messages = append(out.Messages, anthropicMessage{Role: role, Content: blocks})
	}
	out.System = strings.Join(system, "\n\n")
	if len(out.Messages) == 0 {
		return nil, false, invalid("messages", "messages: at least one user or assistant message with content is required")
	}

	if len(in.Stop) > 0 && string(in.Stop) != "null" {
		var one string
		if json.Unmarshal(in.Stop, &one) == nil {
			out.StopSequences = []string{one}
		} else if json.Unmarshal(in.Stop, &out.StopSequences) != nil {
			return nil, false, invalid("stop", "stop: expected a string or an array of strings")
		}
	}

	for i, t := range in.Tools {
		if t.Type != "function" {
			return nil, false, invalid("tools", "tools[%d].type: %q is not supported", i, t.Type)
		}
		schema := t.Function.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out.Tools = append(out.Tools, anthropicTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}

	if len(in.ToolChoice) > 0 && string(in.ToolChoice) != "null" {
		var s string
		var obj struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(in.ToolChoice, &s) == nil:
			switch s {
			case "auto":
				out.ToolChoice = &anthropicToolChoice{Type: "auto"}
			case "required":
				out.ToolChoice = &anthropicToolChoice{Type: "any"}
			case "none":
				out.ToolChoice = &anthropicToolChoice{Type: "none"}
			default:
				return nil, false, invalid("tool_choice", "tool_choice: %q is not supported", s)
			}
		case json.Unmarshal(in.ToolChoice, &obj) == nil && obj.Function.Name != "":
			out.ToolChoice = &anthropicToolChoice{Type: "tool", Name: obj.Function.Name}
		default:
			return nil, false, invalid("tool_choice", "tool_choice: expected a string or a function choice")
		}
	}
	if in.ParallelToolCalls != nil && !*in.ParallelToolCalls && len(out.Tools) > 0 {
		if out.ToolChoice == nil {
			out.ToolChoice = &anthropicToolChoice{Type: "auto"}
		}
		if out.ToolChoice.Type != "none" {
			out.ToolChoice.DisableParallelToolUse = true
		}
	}

	b, err := json.Marshal(out)
	if err != nil {
		return nil, false, fmt.Errorf("provider: encode anthropic request: %w", err)
	}
	return b, includeUsage(body), nil
}

func ptrTo[T any](v T) *T { return &v }

// contentText reads content that must be text: a string or an array of text parts
// (joined with newlines).
func contentText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []openAIPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("expected a string or an array of content parts")
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part of type %q is not supported here", p.Type)
		}
		texts = append(texts, p.Text)
	}
	return strings.Join(texts, "\n"), nil
}

// contentBlocks translates message content into Anthropic blocks; empty text is dropped
// (Anthropic refuses empty text blocks).
func contentBlocks(raw json.RawMessage) ([]anthropicBlock, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, nil
		}
		return []anthropicBlock{{Type: "text", Text: s}}, nil
	}
	var parts []openAIPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, errors.New("expected a string or an array of content parts")
	}
	var out []anthropicBlock
	for _, p := range parts {
		switch p.Type {
		case "text":
			if p.Text != "" {
				out = append(out, anthropicBlock{Type: "text", Text: p.Text})
			}
		case "refusal":
		case "image_url":
			src, err := imageSource(p.ImageURL.URL)
			if err != nil {
				return nil, err
			}
			out = append(out, anthropicBlock{Type: "image", Source: src})
		default:
			return nil, fmt.Errorf("content part of type %q is not supported by this provider", p.Type)
		}
	}
	return out, nil
}

// imageSource translates an image URL: a base64 data URL or an http(s) URL. Of a data
// URL's media type only the type itself is sent ("image/jpeg;charset=utf-8" is
// "image/jpeg"): Anthropic takes no parameters.
func imageSource(u string) (*anthropicSource, error) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		meta, isBase64 := strings.CutSuffix(meta, ";base64")
		mediaType, _, _ := strings.Cut(meta, ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		if !ok || !isBase64 || mediaType == "" {
			return nil, errors.New("image_url: expected a base64 data URL")
		}
		return &anthropicSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	}
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return &anthropicSource{Type: "url", URL: u}, nil
	}
	return nil, errors.New("image_url: expected a data URL or an http(s) URL")
}

// The Anthropic answer, as far as the translation reads it.
type (
	anthropicResponse struct {
		ID         string                 `json:"id"`
		Model      string                 `json:"model"`
		StopReason string                 `json:"stop_reason"`
		Content    []anthropicOutBlock    `json:"content"`
		Usage      anthropicResponseUsage `json:"usage"`
	}
	anthropicOutBlock struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	}
	// anthropicResponseUsage has pointers so a message_delta replaces only what it carries.
	anthropicResponseUsage struct {
		InputTokens              *int64 `json:"input_tokens"`
		OutputTokens             *int64 `json:"output_tokens"`
		CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
		CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
		// CacheCreation splits the cache writes by lifetime (absent from older answers,
		// whose writes are all 5-minute ones).
		CacheCreation *struct {
			Ephemeral5m *int64 `json:"ephemeral_5m_input_tokens"`
			Ephemeral1h *int64 `json:"ephemeral_1h_input_tokens"`
		} `json:"cache_creation"`
		ServiceTier *string `json:"service_tier"`
	}
)

// The OpenAI answer.
type (
	openAICompletion struct {
		ID      string         `json:"id"`
		Object  string         `json:"object"`
		Created int64          `json:"created"`
		Model   string         `json:"model"`
		Choices []openAIChoice `json:"choices"`
		Usage   *Usage         `json:"usage,omitempty"`
	}
	openAIChoice struct {
		Index        int               `json:"index"`
		Message      *openAIOutMessage `json:"message,omitempty"`
		Delta        *openAIDelta      `json:"delta,omitempty"`
		Logprobs     *struct{}         `json:"logprobs"`
		FinishReason *string           `json:"finish_reason"`
	}
	openAIOutMessage struct {
		Role      string              `json:"role"`
		Content   *string             `json:"content"`
		Refusal   *string             `json:"refusal"`
		ToolCalls []openAIOutToolCall `json:"tool_calls,omitempty"`
	}
	openAIDelta struct {
		Role      string              `json:"role,omitempty"`
		Content   *string             `json:"content,omitempty"`
		ToolCalls []openAIOutToolCall `json:"tool_calls,omitempty"`
	}
	openAIOutToolCall struct {
		Index    *int   `json:"index,omitempty"` // streams only
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function struct {
			Name      string `json:"name,omitempty"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
)

// finishReason maps Anthropic's stop_reason to OpenAI's finish_reason.
func finishReason(stop string) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop" // end_turn, stop_sequence, pause_turn
}

// anthropicUsage is the running token count of an answer.
type anthropicUsage struct {
	input, output, cacheRead, cacheCreation int64
	write5m, write1h                        int64
	split                                   bool // the answer split cacheCreation by lifetime
	tier                                    string
}

func (u *anthropicUsage) update(r anthropicResponseUsage) {
	fields := []struct {
		dst *int64
		src *int64
	}{{&u.input, r.InputTokens}, {&u.output, r.OutputTokens}, {&u.cacheRead, r.CacheReadInputTokens}, {&u.cacheCreation, r.CacheCreationInputTokens}}
	if c := r.CacheCreation; c != nil {
		u.split = true
		fields = append(fields, struct{ dst, src *int64 }{&u.write5m, c.Ephemeral5m}, struct{ dst, src *int64 }{&u.write1h, c.Ephemeral1h})
	}
	for _, f := range fields {
		if f.src != nil {
			*f.dst = *f.src // counts are cumulative: replace, never add
		}
	}
	if r.ServiceTier != nil {
		u.tier = *r.ServiceTier
	}
}

// openAI reports the usage as OpenAI counts it: cache reads and writes are prompt tokens.
func (u anthropicUsage) openAI() *Usage {
	o := &Usage{PromptTokens: u.input + u.cacheRead + u.cacheCreation, CompletionTokens: u.output}
	o.TotalTokens = o.PromptTokens + o.CompletionTokens
	o.PromptTokensDetails.CachedTokens = u.cacheRead
	return o
}

// full is openAI's usage with what OpenAI's format has no field for: the cache writes by
// lifetime (all 5-minute ones when the answer did not split them) and the service tier.
func (u anthropicUsage) full() *Usage {
	o := u.openAI()
	o.CacheWrite5mTokens, o.CacheWrite1hTokens = u.cacheCreation, 0
	if u.split {
		o.CacheWrite5mTokens, o.CacheWrite1hTokens = u.write5m, u.write1h
	}
	o.ServiceTier = tierName(u.tier)
	return o
}

// anthropicCompletion translates a Messages answer into a chat completion body, and
// returns the usage in full.
func anthropicCompletion(body []byte, created int64) ([]byte, *Usage, error) {
	var in anthropicResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, nil, fmt.Errorf("provider: decode anthropic answer: %w", err)
	}
	msg := &openAIOutMessage{Role: "assistant"}
	var text strings.Builder
	hasText := false
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
			hasText = true
		case "tool_use":
			var tc openAIOutToolCall
			tc.ID, tc.Type, tc.Function.Name = b.ID, "function", b.Name
			var args bytes.Buffer
			if len(b.Input) == 0 || json.Compact(&args, b.Input) != nil {
				args.Reset()
				args.WriteString("{}")
			}
			tc.Function.Arguments = args.String()
			msg.ToolCalls = append(msg.ToolCalls, tc)
		}
	}
	if hasText {
		s := text.String()
		msg.Content = &s
	}
	var u anthropicUsage
	u.update(in.Usage)
	finish := finishReason(in.StopReason)
	out, err := json.Marshal(openAICompletion{
		ID: in.ID, Object: "chat.completion", Created: created, Model: in.Model,
		Choices: []openAIChoice{{Message: msg, FinishReason: &finish}},
		Usage:   u.openAI(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("provider: encode chat completion: %w", err)
	}
	return out, u.full(), nil
}

// anthropicStream translates a Messages SSE stream into chat.completion.chunk events as it
// is read: each Read that finds nothing pending reads one upstream event and translates
// it, so it needs no goroutine and holds nothing back.
type anthropicStream struct {
	body         io.ReadCloser
	events       *sse.Reader
	created      int64
	includeUsage bool

	out  []byte // translated bytes not yet read
	off  int
	err  error // returned once out is drained
	stop bool  // message_stop seen: drain the upstream, then io.EOF

	id, model string
	usage     anthropicUsage
	final     Usage               // the Response's Usage, filled in at message_stop
	tools     map[int]*streamTool // by Anthropic content block index
}

// streamTool is a tool call being streamed.
type streamTool struct {
	index   int  // OpenAI tool call index
	hasArgs bool // some arguments were sent
}

// Read implements io.Reader.
func (s *anthropicStream) Read(p []byte) (int, error) {
	for s.off == len(s.out) {
		if s.err != nil {
			return 0, s.err
		}
		s.out, s.off = s.out[:0], 0
		s.next()
	}
	n := copy(p, s.out[s.off:])
	s.off += n
	return n, nil
}

// Close implements io.Closer.
func (s *anthropicStream) Close() error { return s.body.Close() }

// next reads one upstream event and translates it into s.out, or sets s.err.
func (s *anthropicStream) next() {
	if s.stop {
		// The client has its [DONE]; read the upstream to its end so its connection can
		// be reused (Anthropic ends the response right after message_stop).
		io.Copy(io.Discard, io.LimitReader(s.body, 64<<10))
		s.err = io.EOF
		return
	}
	raw, err := s.events.Next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the stream ended before message_stop
		}
		s.err = err
		return
	}
	data := sse.Data(raw)
	if len(data) == 0 {
		return
	}
	var ev struct {
		Type    string `json:"type"`
		Index   int    `json:"index"`
		Message struct {
			ID    string                 `json:"id"`
			Model string                 `json:"model"`
			Usage anthropicResponseUsage `json:"usage"`
		} `json:"message"`
		ContentBlock anthropicOutBlock `json:"content_block"`
		Delta        struct {
			Type        string `json:"type"`
			Text        string `json:"text"`
			PartialJSON string `json:"partial_json"`
			StopReason  string `json:"stop_reason"`
		} `json:"delta"`
		Usage anthropicResponseUsage `json:"usage"`
		Error anthropicErrorDetail   `json:"error"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		s.emitError("The upstream provider sent an event that is not JSON.", "upstream_error")
		return
	}
	if ev.Type == "" {
		ev.Type = sse.Name(raw)
	}
	switch ev.Type {
	case "message_start":
		s.id, s.model = ev.Message.ID, ev.Message.Model
		s.usage.update(ev.Message.Usage)
		empty := ""
		s.emitDelta(&openAIDelta{Role: "assistant", Content: &empty}, nil)
	case "content_block_start":
		switch ev.ContentBlock.Type {
		case "text":
			if ev.ContentBlock.Text != "" {
				s.emitDelta(&openAIDelta{Content: &ev.ContentBlock.Text}, nil)
			}
		case "tool_use":
			i := len(s.tools)
			s.tools[ev.Index] = &streamTool{index: i}
			tc := openAIOutToolCall{Index: &i, ID: ev.ContentBlock.ID, Type: "function"}
			tc.Function.Name = ev.ContentBlock.Name
			s.emitDelta(&openAIDelta{ToolCalls: []openAIOutToolCall{tc}}, nil)
		}
	case "content_block_delta":
		switch ev.Delta.Type {
		case "text_delta":
			if ev.Delta.Text != "" {
				s.emitDelta(&openAIDelta{Content: &ev.Delta.Text}, nil)
			}
		case "input_json_delta":
			t, ok := s.tools[ev.Index]
			if !ok || ev.Delta.PartialJSON == "" {
				return
			}
			t.hasArgs = true
			s.emitArguments(t.index, ev.Delta.PartialJSON)
		}
	case "content_block_stop":
		// A tool called without arguments gets "{}", as in a whole answer: clients
		// parse the arguments they concatenated, and "" is not JSON.
		if t, ok := s.tools[ev.Index]; ok && !t.hasArgs {
			t.hasArgs = true
			s.emitArguments(t.index, "{}")
		}
	case "message_delta":
		s.usage.update(ev.Usage)
		if ev.Delta.StopReason != "" {
			finish := finishReason(ev.Delta.StopReason)
			s.emitDelta(&openAIDelta{}, &finish)
		}
	case "message_stop":
		s.final = *s.usage.full()
		if s.includeUsage {
			s.emit(openAICompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
				Choices: []openAIChoice{}, Usage: s.usage.openAI()})
		}
		s.out = append(s.out, "data: [DONE]\n\n"...)
		s.stop = true
	case "error":
		msg, typ := ev.Error.Message, ev.Error.Type
		if typ == "" {
			typ = "upstream_error"
		}
		s.emitError(msg, typ)
	}
	// ping and unknown events carry nothing to translate.
}

func (s *anthropicStream) emitDelta(d *openAIDelta, finish *string) {
	s.emit(openAICompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []openAIChoice{{Delta: d, FinishReason: finish}}})
}

func (s *anthropicStream) emitArguments(index int, args string) {
	var tc openAIOutToolCall
	tc.Index, tc.Function.Arguments = &index, args
	s.emitDelta(&openAIDelta{ToolCalls: []openAIOutToolCall{tc}}, nil)
}

func (s *anthropicStream) emit(v any) {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	s.out = append(s.out, "data: "...)
	s.out = append(s.out, b...)
	s.out = append(s.out, "\n\n"...)
}

// emitError ends the stream with an OpenAI error event.
func (s *anthropicStream) emitError(message, typ string) {
	s.out = append(s.out, "data: "...)
	s.out = append(s.out, ErrorJSON(message, typ, "", "")...)
	s.out = append(s.out, "\n\n"...)
	s.err = io.EOF
}
