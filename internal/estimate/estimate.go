// Package estimate counts the tokens of a chat completion the upstream did not report
// usage for (older Azure API versions, many OpenAI-compatible servers, a client that left
// before the usage chunk), so the request is priced for what it really sent and received
// instead of being free or guessed from its size.
//
// Tokens are counted with OpenAI's own byte-pair encodings, embedded and offline
// (github.com/tiktoken-go/tokenizer): o200k_base for the GPT-4o, GPT-4.1, GPT-5 and o-series
// families, cl100k_base for GPT-4, GPT-3.5 and the embedding models. Other families (Claude
// above all, whose tokenizer is not published) are counted with o200k_base as an
// approximation, and the method says so. The prompt is counted by OpenAI's rules for chat
// formatting (3 tokens per message, 1 per name, 3 to prime the reply, and the cookbook's
// rule for function definitions); the completion is the text, refusals and tool-call names
// and arguments of the answer actually relayed, so a stream cut short is counted up to
// where it stopped. Reasoning tokens are invisible in the answer and cannot be counted.
// GPT-5 renders function definitions in a format OpenAI has not published: its prompts
// with tools are under-estimated (by about half in the one recorded example).
package estimate

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"

	"github.com/tiktoken-go/tokenizer"

	"github.com/loom-gateway/loom/internal/sse"
)

// Chat formatting overheads, from OpenAI's cookbook ("How to count tokens with tiktoken").
const (
	tokensPerMessage = 3 // <|start|>{role}<|message|> … <|end|>
	tokensPerName    = 1
	replyPriming     = 3  // <|start|>assistant<|message|>
	imageTokens      = 85 // an image part, at the low-detail price: the size is unknown here
)

// maxExact bounds how much text is tokenized exactly; beyond it the count is scaled from
// the exactly counted part, so a hostile 8 MiB body costs a bounded amount of CPU.
const maxExact = 1 << 20

// Result is an estimate and how it was made.
type Result struct {
	PromptTokens     int64
	CompletionTokens int64
	// Method names the count: "tiktoken/o200k_base", "tiktoken/cl100k_base", or
	// "approx/o200k_base" for a family whose own tokenizer Loom does not have.
	Method string
}

// Counter counts tokens. The zero value is not usable; use New. It is safe for
// concurrent use; the encodings load on first use.
type Counter struct {
	once          sync.Once
	o200k, cl100k tokenizer.Codec
}

// New returns a Counter.
func New() *Counter { return &Counter{} }

func (c *Counter) load() {
	c.once.Do(func() {
		c.o200k, _ = tokenizer.Get(tokenizer.O200kBase) // both are built in: cannot fail
		c.cl100k, _ = tokenizer.Get(tokenizer.Cl100kBase)
	})
}

// family is how model's tokens are counted.
type family struct {
	codec  tokenizer.Codec
	method string
	legacy bool // GPT-3.5/GPT-4: a function definition costs 10 tokens, not 7
	// priming is the reply's overhead: 3 by the cookbook, 2 for GPT-5 as its recorded
	// answers count.
	priming int64
}

func (c *Counter) family(model string) family {
	c.load()
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
	}
	m := strings.ToLower(model)
	switch {
	case strings.HasPrefix(m, "gpt-5"):
		return family{c.o200k, "tiktoken/o200k_base", false, 2}
	case strings.HasPrefix(m, "gpt-4o"), strings.HasPrefix(m, "gpt-4.1"), strings.HasPrefix(m, "gpt-4.5"),
		strings.HasPrefix(m, "gpt-audio"), strings.HasPrefix(m, "chatgpt-"),
		strings.HasPrefix(m, "codex-"), strings.HasPrefix(m, "o1"), strings.HasPrefix(m, "o3"), strings.HasPrefix(m, "o4"):
		return family{c.o200k, "tiktoken/o200k_base", false, replyPriming}
	case strings.HasPrefix(m, "gpt-4"), strings.HasPrefix(m, "gpt-3.5"), strings.HasPrefix(m, "gpt-35"),
		strings.HasPrefix(m, "text-embedding-"):
		return family{c.cl100k, "tiktoken/cl100k_base", true, replyPriming}
	}
	return family{c.o200k, "approx/o200k_base", false, replyPriming}
}

// Count estimates the usage of a chat completion for model from the request body and the
// response body as relayed (a JSON completion or an SSE stream of chunks). Bodies that do
// not parse count as far as they do.
func (c *Counter) Count(model string, request, response []byte) Result {
	f := c.family(model)
	return Result{
		PromptTokens:     f.prompt(request),
		CompletionTokens: f.completion(response),
		Method:           f.method,
	}
}

// Tokens counts the tokens of s with model's encoding, as Count would.
func (c *Counter) Tokens(model, s string) int64 { return c.family(model).count(s) }

func (f family) count(s string) int64 {
	if s == "" {
		return 0
	}
	if len(s) <= maxExact {
		n, _ := f.codec.Count(s)
		return int64(n)
	}
	head := strings.ToValidUTF8(s[:maxExact], "") // a cut rune would count as bytes
	n, _ := f.codec.Count(head)
	return int64(float64(n) * float64(len(s)) / float64(len(head)))
}

type (
	chatRequest struct {
		Messages []chatMessage `json:"messages"`
		Tools    []struct {
			Function functionDef `json:"function"`
		} `json:"tools"`
		Functions []functionDef `json:"functions"` // the deprecated form
	}
	chatMessage struct {
		Role      string          `json:"role"`
		Name      string          `json:"name"`
		Content   json.RawMessage `json:"content"`
		ToolCalls []toolCall      `json:"tool_calls"`
	}
	toolCall struct {
		Index    int `json:"index"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	functionDef struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Properties map[string]struct {
				Type        any      `json:"type"`
				Description string   `json:"description"`
				Enum        []string `json:"enum"`
			} `json:"properties"`
		} `json:"parameters"`
	}
)

// prompt counts a chat request's prompt by OpenAI's chat formatting rules.
func (f family) prompt(body []byte) int64 {
	var req chatRequest
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	var n int64
	for _, m := range req.Messages {
		n += tokensPerMessage + f.count(m.Role) + f.content(m.Content)
		if m.Name != "" {
			n += tokensPerName + f.count(m.Name)
		}
		for _, tc := range m.ToolCalls {
			n += f.count(tc.Function.Name) + f.count(tc.Function.Arguments)
		}
	}
	defs := req.Functions
	for _, t := range req.Tools {
		defs = append(defs, t.Function)
	}
	return n + f.priming + f.functions(defs)
}

// content counts a message's content: a string, or an array of parts.
func (f family) content(raw json.RawMessage) int64 {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return f.count(s)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return 0
	}
	var n int64
	for _, p := range parts {
		switch p.Type {
		case "text":
			n += f.count(p.Text)
		case "image_url":
			n += imageTokens
		}
	}
	return n
}

// functions counts function definitions as the OpenAI cookbook does: the model sees them
// rendered into a namespace whose overheads these constants measure.
func (f family) functions(defs []functionDef) int64 {
	if len(defs) == 0 {
		return 0
	}
	funcInit := int64(7)
	if f.legacy {
		funcInit = 10
	}
	const propInit, propKey, enumInit, enumItem, funcEnd = 3, 3, -3, 3, 12
	var n int64
	for _, d := range defs {
		n += funcInit + f.count(d.Name+":"+strings.TrimSuffix(d.Description, "."))
		props := d.Parameters.Properties
		if len(props) == 0 {
			continue
		}
		n += propInit
		for key, p := range props {
			n += propKey
			if len(p.Enum) > 0 {
				n += enumInit
				for _, item := range p.Enum {
					n += enumItem + f.count(item)
				}
			}
			typ, _ := p.Type.(string)
			n += f.count(key + ":" + typ + ":" + strings.TrimSuffix(p.Description, "."))
		}
	}
	return n + funcEnd
}

// answer is what a choice generated: its text and its tool calls' names and arguments.
type answer struct {
	text  strings.Builder
	tools map[int]*strings.Builder
}

// completion counts the generated tokens of a JSON completion or an SSE stream.
func (f family) completion(body []byte) int64 {
	answers := map[int]*answer{}
	get := func(i int) *answer {
		a := answers[i]
		if a == nil {
			a = &answer{tools: map[int]*strings.Builder{}}
			answers[i] = a
		}
		return a
	}
	add := func(i int, m *chatDelta) {
		a := get(i)
		a.text.WriteString(m.Content)
		a.text.WriteString(m.Refusal)
		for j, tc := range m.ToolCalls {
			k := tc.Index
			if tc.Index == 0 && j > 0 { // a JSON answer's calls carry no index
				k = j
			}
			b := a.tools[k]
			if b == nil {
				b = &strings.Builder{}
				a.tools[k] = b
			}
			b.WriteString(tc.Function.Name)
			b.WriteString(tc.Function.Arguments)
		}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var c chatChunk
		if json.Unmarshal(trimmed, &c) == nil {
			for _, ch := range c.Choices {
				if ch.Message != nil {
					add(ch.Index, ch.Message)
				}
			}
		}
	} else {
		rd := sse.NewReader(bytes.NewReader(body))
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			var c chatChunk
			if json.Unmarshal(sse.Data(ev), &c) != nil {
				continue
			}
			for _, ch := range c.Choices {
				if ch.Delta != nil {
					add(ch.Index, ch.Delta)
				}
			}
		}
	}
	var n int64
	for _, a := range answers {
		n += f.count(a.text.String())
		for _, b := range a.tools {
			n += f.count(b.String())
		}
	}
	return n
}

type (
	chatChunk struct {
		Choices []struct {
			Index   int        `json:"index"`
			Message *chatDelta `json:"message"`
			Delta   *chatDelta `json:"delta"`
		} `json:"choices"`
	}
	chatDelta struct {
		Content   string     `json:"content"`
		Refusal   string     `json:"refusal"`
		ToolCalls []toolCall `json:"tool_calls"`
	}
)
