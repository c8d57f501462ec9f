package provider

import "strconv"

// Usage is the token accounting of one chat completion, as OpenAI reports it.
type Usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"` // as reported; Loom does not read it
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"` // a subset of PromptTokens
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"` // a subset of CompletionTokens
	} `json:"completion_tokens_details"`
}

// Completion is what Loom reads of a chat completion body or of one stream chunk.
type Completion struct {
	// Model is the model the upstream says served the request, as written in b (it
	// aliases b; JSON escapes are not decoded, which model names do not use).
	Model []byte
	// Usage is set when the body carries a usage object.
	Usage *Usage
	// NoChoices is set when "choices" is present and empty: a stream's usage-only chunk
	// (or an Azure prompt-filter chunk).
	NoChoices bool
	// HasError is set when the body carries a non-null "error" member.
	HasError bool
	// HasContent is set when a stream chunk carries choices: a rough count of generated
	// tokens when the usage never arrives.
	HasContent bool
}

// ReadCompletion reads the fields Loom meters from a chat completion JSON body or stream
// chunk without decoding the rest. A body that is not a JSON object yields a zero value.
func ReadCompletion(b []byte) Completion {
	var c Completion
	members(b, func(key []byte, start, end int) bool {
		v := b[start:end]
		switch string(key) {
		case "model":
			if len(v) > 2 && v[0] == '"' {
				c.Model = v[1 : len(v)-1]
			}
		case "usage":
			if v[0] == '{' {
				c.Usage = readUsage(v)
			}
		case "choices":
			c.NoChoices = isEmptyArray(v)
			c.HasContent = !c.NoChoices && v[0] == '['
		case "error":
			c.HasError = string(v) != "null"
		}
		return true
	})
	return c
}

// readUsage reads a usage object (valid JSON) without reflection: it runs for every
// answer. Members it does not know are skipped; a count that is not an integer reads as 0.
func readUsage(v []byte) *Usage {
	u := &Usage{}
	members(v, func(key []byte, start, end int) bool {
		val := v[start:end]
		switch string(key) {
		case "prompt_tokens":
			u.PromptTokens = readInt(val)
		case "completion_tokens":
			u.CompletionTokens = readInt(val)
		case "prompt_tokens_details":
			members(val, func(k []byte, s, e int) bool {
				if string(k) == "cached_tokens" {
					u.PromptTokensDetails.CachedTokens = readInt(val[s:e])
				}
				return true
			})
		case "completion_tokens_details":
			members(val, func(k []byte, s, e int) bool {
				if string(k) == "reasoning_tokens" {
					u.CompletionTokensDetails.ReasoningTokens = readInt(val[s:e])
				}
				return true
			})
		}
		return true
	})
	return u
}

func readInt(b []byte) int64 {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			if i, err := strconv.ParseInt(string(b), 10, 64); err == nil {
				return i
			}
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
