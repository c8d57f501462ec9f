package provider

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// This file translates an OpenAI chat completion request into an Anthropic Messages request.

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
