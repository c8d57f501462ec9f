package provider

import (
	"bytes"
	"cmp"
	"slices"
)

// Bounds on what FinishReasons keeps. An upstream chooses these bytes: a stream could
// send a new reason in every chunk, or one reason of megabytes. The bounds only cap
// memory; the trace keeps fewer and shorter reasons (tracing.MaxFinishReasons,
// tracing.MaxFinishReasonBytes) and is marked when it cuts, which it does whenever these
// bounds were reached, as they are larger.
const (
	maxFinishReasons     = 16
	maxFinishReasonBytes = 256
)

// FinishReasons collects the finish reasons of an answer's choices as the OpenAI format
// writes them ("stop", "length", "tool_calls", "content_filter"; the Anthropic adapter
// maps its stop_reason onto these): each reason once, in the order of the lowest choice
// index that finished with it. The zero value is ready to use.
type FinishReasons struct {
	r []choiceFinish
}

type choiceFinish struct {
	index  int64 // the lowest choice index seen with reason
	reason string
}

// finishKeyTail is the end of the key `"finish_reason"`, searched for from its '_', a byte
// rarer in JSON than its leading quote (which would stop the search at every string).
var finishKeyTail = []byte(`_reason"`)

const finishKeyHead = `"finish`

// Add reads the finish reasons of choices, the "choices" array of a chat completion or
// of one stream chunk (Completion.Choices). A missing, null, empty or non-string
// finish_reason is no reason; a choice without an "index" takes its place in the array.
func (f *FinishReasons) Add(choices []byte) {
	if !hasStringFinish(choices) {
		return // most stream chunks ("finish_reason":null): nothing to walk
	}
	pos := int64(0)
	elements(choices, func(start, end int) bool {
		c := choices[start:end]
		index, reason := pos, []byte(nil)
		members(c, func(key []byte, s, e int) bool {
			switch v := c[s:e]; string(key) {
			case "index":
				index = readInt(v)
			case "finish_reason":
				if len(v) > 2 && v[0] == '"' {
					reason = v
				}
			}
			return true
		})
		if reason != nil {
			f.add(index, reason)
		}
		pos++
		return true
	})
}

// hasStringFinish reports whether a "finish_reason" key in choices may have a string
// value, a quick look that saves walking the choices of nearly every stream chunk. (A key
// inside a JSON string has its quotes escaped, so it does not match.)
func hasStringFinish(choices []byte) bool {
	for b, at := choices, 0; ; {
		i := bytes.Index(b[at:], finishKeyTail)
		if i < 0 {
			return false
		}
		i += at
		at = i + len(finishKeyTail)
		if i < len(finishKeyHead) || string(b[i-len(finishKeyHead):i]) != finishKeyHead {
			continue
		}
		j := skipSpace(b, at)
		if j < len(b) && b[j] == ':' {
			if j = skipSpace(b, j+1); j < len(b) && b[j] == '"' {
				return true
			}
		}
	}
}

// add notes reason (a JSON string as written, quotes included) for the choice index.
func (f *FinishReasons) add(index int64, quoted []byte) {
	raw := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		raw = []byte(unquote(quoted))
	}
	raw = raw[:min(len(raw), maxFinishReasonBytes)]
	if len(raw) == 0 {
		return
	}
	hi := -1 // the kept reason with the highest index
	for i := range f.r {
		if f.r[i].reason == string(raw) {
			f.r[i].index = min(f.r[i].index, index)
			return
		}
		if hi < 0 || f.r[i].index > f.r[hi].index {
			hi = i
		}
	}
	switch {
	case len(f.r) < maxFinishReasons:
		f.r = append(f.r, choiceFinish{index, reasonString(raw)})
	case index < f.r[hi].index:
		// Full: a lower choice's reason comes before the highest one kept.
		f.r[hi] = choiceFinish{index, reasonString(raw)}
	}
}

// reasonString returns the reason as a string, without allocating for the reasons the
// OpenAI format knows.
func reasonString(raw []byte) string {
	switch string(raw) {
	case "stop":
		return "stop"
	case "length":
		return "length"
	case "tool_calls":
		return "tool_calls"
	case "content_filter":
		return "content_filter"
	case "function_call":
		return "function_call"
	}
	return string(raw)
}

// List returns the reasons in choice order, or nil when there are none.
func (f *FinishReasons) List() []string {
	if len(f.r) == 0 {
		return nil
	}
	slices.SortStableFunc(f.r, func(a, b choiceFinish) int { return cmp.Compare(a.index, b.index) })
	out := make([]string, len(f.r))
	for i, c := range f.r {
		out[i] = c.reason
	}
	return out
}

// FinishReasons returns the finish reasons of a chat completion body's choices (see
// FinishReasons.Add).
func (c Completion) FinishReasons() []string {
	var f FinishReasons
	f.Add(c.Choices)
	return f.List()
}
