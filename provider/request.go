package provider

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// InvalidRequestError describes a client request Loom refuses before it goes upstream.
// Param names the offending field, if any.
type InvalidRequestError struct {
	Param   string
	Message string
}

func (e *InvalidRequestError) Error() string { return e.Message }

// ChatRequest is what Loom reads of a client's chat completion request: the fields it
// routes and meters by. The body itself is kept as the client sent it.
type ChatRequest struct {
	Body   []byte
	Model  string
	Stream bool
	// IncludeUsage is the client's stream_options.include_usage.
	IncludeUsage bool

	modelStart, modelEnd int // the "model" value's range in Body
	optsStart, optsEnd   int // the "stream_options" value's range, or -1
}

// ParseChatRequest validates body as a chat completion request: a JSON object with a
// non-empty string "model", a non-empty array "messages", and, when present, a boolean
// "stream" and an object "stream_options". Errors are *InvalidRequestError.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	if !json.Valid(body) {
		return nil, &InvalidRequestError{Message: "We could not parse the JSON body of your request. The body must be valid JSON."}
	}
	r := &ChatRequest{Body: body, modelStart: -1, optsStart: -1}
	var bad *InvalidRequestError
	hasMessages := false
	seen := 0 // bit i: the i-th member of routedKeys was seen
	err := members(body, func(rawKey []byte, start, end int) bool {
		v := body[start:end]
		key := memberName(rawKey)
		// Some decoders (Go's among them) match member names case-insensitively, so
		// "MODEL" after "model" is a duplicate too.
		if i := slices.IndexFunc(routedKeys, func(k string) bool { return strings.EqualFold(k, key) }); i >= 0 {
			if seen&(1<<i) != 0 {
				// Decoders disagree on which duplicate wins: Loom must route and meter on
				// what the upstream will use, so it refuses to guess.
				bad = &InvalidRequestError{Param: key, Message: key + ": given more than once"}
				return false
			}
			seen |= 1 << i
		}
		switch key {
		case "model":
			if v[0] != '"' {
				bad = &InvalidRequestError{Param: "model", Message: "model: expected a string"}
				return false
			}
			r.Model, r.modelStart, r.modelEnd = unquote(v), start, end
		case "messages":
			if v[0] != '[' {
				bad = &InvalidRequestError{Param: "messages", Message: "messages: expected an array"}
				return false
			}
			hasMessages = !isEmptyArray(v)
		case "stream":
			switch string(v) {
			case "true":
				r.Stream = true
			case "false", "null":
			default:
				bad = &InvalidRequestError{Param: "stream", Message: "stream: expected a boolean"}
				return false
			}
		case "stream_options":
			if string(v) == "null" {
				r.optsStart, r.optsEnd = start, end // replaced if Loom must ask for usage
				break
			}
			if v[0] != '{' {
				bad = &InvalidRequestError{Param: "stream_options", Message: "stream_options: expected an object"}
				return false
			}
			r.optsStart, r.optsEnd = start, end
			r.IncludeUsage = optsIncludeUsage(v)
		}
		return true
	})
	switch {
	case err != nil:
		return nil, &InvalidRequestError{Message: "The request body must be a JSON object."}
	case bad != nil:
		return nil, bad
	case r.modelStart < 0 || r.Model == "":
		return nil, &InvalidRequestError{Param: "model", Message: "you must provide a model parameter"}
	case !hasMessages:
		return nil, &InvalidRequestError{Param: "messages", Message: "messages: must be a non-empty array"}
	}
	return r, nil
}

// memberName decodes a member name as written between its quotes: "mod\u0065l" is
// "model" to the upstream's decoder, so Loom reads it as such.
func memberName(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	return unquote(append(append([]byte{'"'}, raw...), '"'))
}

// optsIncludeUsage reads include_usage from a stream_options value.
func optsIncludeUsage(opts []byte) bool {
	on := false
	members(opts, func(k []byte, s, e int) bool {
		if memberName(k) == "include_usage" {
			on = string(opts[s:e]) == "true"
		}
		return true
	})
	return on
}

// includeUsage reads stream_options.include_usage from a valid JSON request body as a
// decoder that matches member names exactly (OpenAI's) does: a "Stream_Options" beside
// the stream_options Loom wrote does not count, whatever Go's decoder would make of it.
func includeUsage(body []byte) bool {
	on := false
	members(body, func(k []byte, s, e int) bool {
		if memberName(k) == "stream_options" {
			on = optsIncludeUsage(body[s:e])
		}
		return true
	})
	return on
}

// withoutMember returns the JSON object body without its top-level members called name,
// or body itself when it has none. The other members keep their bytes; the white space
// between them is dropped.
func withoutMember(body []byte, name string) []byte {
	out := append(make([]byte, 0, len(body)), '{')
	found := false
	err := members(body, func(k []byte, s, e int) bool {
		if memberName(k) == name {
			found = true
			return true
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(append(append(append(out, '"'), k...), '"', ':'), body[s:e]...)
		return true
	})
	if err != nil || !found {
		return body
	}
	return append(out, '}')
}

// routedKeys are the members Loom reads to route and meter a request.
var routedKeys = []string{"model", "messages", "stream", "stream_options"}

// unquote decodes a JSON string value; escapes are rare in model names, so the plain case
// costs one small allocation.
func unquote(v []byte) string {
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return ""
			}
			return s
		}
	}
	return string(v[1 : len(v)-1])
}

// UpstreamBody returns the body to send upstream: model replaced by upstreamModel and, for
// streams, stream_options.include_usage forced on so usage is never lost. Other bytes are
// passed through untouched; when nothing changes, Body itself is returned.
func (r *ChatRequest) UpstreamBody(upstreamModel string) []byte {
	sameModel := upstreamModel == r.Model
	if sameModel && (!r.Stream || r.IncludeUsage) {
		return r.Body
	}
	b := r.Body
	out := make([]byte, 0, len(b)+len(upstreamModel)+48)
	type splice struct {
		start, end int
		with       []byte
	}
	var edits [2]splice
	n := 0
	if !sameModel {
		edits[n] = splice{r.modelStart, r.modelEnd, jsonString(upstreamModel)}
		n++
	}
	if r.Stream && !r.IncludeUsage {
		if r.optsStart >= 0 {
			edits[n] = splice{r.optsStart, r.optsEnd, withIncludeUsage(b[r.optsStart:r.optsEnd])}
		} else {
			// Insert a new member right after the opening brace.
			open := skipSpace(b, 0) + 1
			edits[n] = splice{open, open, []byte(`"stream_options":{"include_usage":true},`)}
		}
		n++
	}
	if n == 2 && edits[1].start < edits[0].start {
		edits[0], edits[1] = edits[1], edits[0]
	}
	pos := 0
	for _, e := range edits[:n] {
		out = append(out, b[pos:e.start]...)
		out = append(out, e.with...)
		pos = e.end
	}
	return append(out, b[pos:]...)
}

// jsonString encodes s as a JSON string: control characters escaped, invalid UTF-8
// replaced by U+FFFD (Go's quoting would write \x7f, which is not JSON).
func jsonString(s string) []byte {
	b, _ := json.Marshal(s) // a string: cannot fail
	return b
}

// withIncludeUsage rewrites a stream_options object so include_usage is true.
func withIncludeUsage(opts []byte) []byte {
	if string(opts) == "null" {
		return []byte(`{"include_usage":true}`)
	}
	m := map[string]json.RawMessage{}
	_ = json.Unmarshal(opts, &m) // opts is a validated JSON object
	m["include_usage"] = json.RawMessage("true")
	out, _ := json.Marshal(m)
	return out
}
