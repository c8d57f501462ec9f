package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// This file translates an Anthropic Messages answer (and its usage) into a chat completion.

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
