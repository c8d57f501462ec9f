package provider

import (
	"encoding/json"
	"io"

	"github.com/loom-gateway/loom/internal/sse"
)

// This file translates an Anthropic Messages stream into chat.completion.chunk events.

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
