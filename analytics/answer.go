package analytics

import (
	"bytes"
	"encoding/json"

	"github.com/loom-gateway/loom/internal/sse"
)

// Answer is a streamed answer put back together from its chat.completion.chunk events, so
// a reader sees what the model said instead of raw SSE.
type Answer struct {
	Choices []AnswerChoice `json:"choices"`
	// Done is set when the stream ended with "data: [DONE]"; unset, the capture was cut
	// short (the client left, the upstream broke off, or the capture limit was reached).
	Done bool `json:"done"`
	// Error is an error event the stream carried, as sent.
	Error json.RawMessage `json:"error,omitempty"`
}

// AnswerChoice is one choice of a streamed answer.
type AnswerChoice struct {
	Index        int        `json:"index"`
	Role         string     `json:"role,omitempty"`
	Content      string     `json:"content"`
	Refusal      string     `json:"refusal,omitempty"`
	ToolCalls    []ToolCall `json:"tool_calls,omitempty"`
	FinishReason string     `json:"finish_reason,omitempty"`
}

// ToolCall is a tool call of a streamed answer, its arguments joined from their deltas.
type ToolCall struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// chunk is what Reassemble reads of a chat.completion.chunk.
type chunk struct {
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string `json:"role"`
			Content   string `json:"content"`
			Refusal   string `json:"refusal"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

// Reassemble joins the captured SSE events of a streamed chat completion into the answer.
// Events that are not chunks (comments, malformed JSON, a cut-off last event) are skipped:
// the capture may end anywhere. Choices and tool calls are matched by their index, by
// search rather than by position, so a hostile index cannot make it allocate.
func Reassemble(captured []byte) Answer {
	a := Answer{Choices: []AnswerChoice{}}
	rd := sse.NewReader(bytes.NewReader(captured))
	for {
		ev, err := rd.Next()
		if err != nil {
			return a
		}
		data := sse.Data(ev)
		if string(data) == "[DONE]" {
			a.Done = true
			continue
		}
		var c chunk
		if json.Unmarshal(data, &c) != nil {
			continue
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			a.Error = c.Error
		}
		for _, ch := range c.Choices {
			dst := a.choice(ch.Index)
			d := ch.Delta
			if d.Role != "" {
				dst.Role = d.Role
			}
			dst.Content += d.Content
			dst.Refusal += d.Refusal
			if ch.FinishReason != nil {
				dst.FinishReason = *ch.FinishReason
			}
			for _, tc := range d.ToolCalls {
				call := dst.toolCall(tc.Index)
				if tc.ID != "" {
					call.ID = tc.ID
				}
				if tc.Type != "" {
					call.Type = tc.Type
				}
				call.Function.Name += tc.Function.Name
				call.Function.Arguments += tc.Function.Arguments
			}
		}
	}
}

func (a *Answer) choice(index int) *AnswerChoice {
	for i := range a.Choices {
		if a.Choices[i].Index == index {
			return &a.Choices[i]
		}
	}
	a.Choices = append(a.Choices, AnswerChoice{Index: index})
	return &a.Choices[len(a.Choices)-1]
}

func (c *AnswerChoice) toolCall(index int) *ToolCall {
	for i := range c.ToolCalls {
		if c.ToolCalls[i].Index == index {
			return &c.ToolCalls[i]
		}
	}
	c.ToolCalls = append(c.ToolCalls, ToolCall{Index: index})
	return &c.ToolCalls[len(c.ToolCalls)-1]
}
