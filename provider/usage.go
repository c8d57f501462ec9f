package provider

import (
	"bytes"
	"strconv"
)

// Usage is the token accounting of one chat completion, as OpenAI reports it.
type Usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"` // as reported; Loom does not read it
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`          // a subset of PromptTokens
		AudioTokens  int64 `json:"audio_tokens,omitempty"` // a subset of PromptTokens
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens          int64 `json:"reasoning_tokens"`                     // a subset of CompletionTokens
		AudioTokens              int64 `json:"audio_tokens,omitempty"`               // a subset of CompletionTokens
		AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens,omitempty"` // a subset of CompletionTokens
		RejectedPredictionTokens int64 `json:"rejected_prediction_tokens,omitempty"` // billed as completion tokens
	} `json:"completion_tokens_details"`

	// CacheWrite5mTokens and CacheWrite1hTokens are the prompt tokens written to the
	// provider's cache with a 5-minute or 1-hour lifetime (Anthropic; a subset of
	// PromptTokens, billed above input). OpenAI has no such field, so the Anthropic
	// adapter's translation for the client does not carry them.
	CacheWrite5mTokens int64 `json:"-"`
	CacheWrite1hTokens int64 `json:"-"`
	// ServiceTier is the tier the upstream says served the request (OpenAI's top-level
	// service_tier, Anthropic's usage.service_tier): flex and priority are priced apart.
	ServiceTier string `json:"-"`
}

// Completion is what Loom reads of a chat completion body or of one stream chunk.
type Completion struct {
	// Model is the model the upstream says served the request. It aliases b unless the
	// JSON string holds escapes, which are decoded (a name is then never stored escaped).
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
	// Choices is the "choices" value as written (it aliases b), nil when absent: read
	// its finish reasons with FinishReasons.
	Choices []byte
}

// maxServiceTier bounds the service tier kept from an upstream answer: tier names are
// short words, and anything longer is not one.
const maxServiceTier = 32

// ReadCompletion reads the fields Loom meters from a chat completion JSON body or stream
// chunk without decoding the rest. A body that is not a JSON object yields a zero value.
func ReadCompletion(b []byte) Completion {
	var c Completion
	var tier []byte
	members(b, func(key []byte, start, end int) bool {
		v := b[start:end]
		switch string(key) {
		case "model":
			if len(v) > 2 && v[0] == '"' {
				c.Model = v[1 : len(v)-1]
				if bytes.IndexByte(c.Model, '\\') >= 0 {
					c.Model = []byte(unquote(v))
				}
			}
		case "usage":
			if v[0] == '{' {
				c.Usage = readUsage(v)
			}
		case "choices":
			c.NoChoices = isEmptyArray(v)
			c.HasContent = !c.NoChoices && v[0] == '['
			c.Choices = v
		case "error":
			c.HasError = string(v) != "null"
		case "service_tier":
			tier = v
		}
		return true
	})
	if c.Usage != nil {
		c.Usage.ServiceTier = readTier(tier)
	}
	return c
}

// readTier returns a JSON string value that looks like a tier name ("flex"), else "".
func readTier(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	return tierName(string(v[1 : len(v)-1]))
}

// tierName returns s if it looks like a service tier name (a short lower-case word), else
// "": the tier is upstream-controlled and ends up in traces and metrics.
func tierName(s string) string {
	if len(s) > maxServiceTier {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return ""
		}
	}
	return s
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
				switch string(k) {
				case "cached_tokens":
					u.PromptTokensDetails.CachedTokens = readInt(val[s:e])
				case "audio_tokens":
					u.PromptTokensDetails.AudioTokens = readInt(val[s:e])
				}
				return true
			})
		case "completion_tokens_details":
			members(val, func(k []byte, s, e int) bool {
				d := &u.CompletionTokensDetails
				switch string(k) {
				case "reasoning_tokens":
					d.ReasoningTokens = readInt(val[s:e])
				case "audio_tokens":
					d.AudioTokens = readInt(val[s:e])
				case "accepted_prediction_tokens":
					d.AcceptedPredictionTokens = readInt(val[s:e])
				case "rejected_prediction_tokens":
					d.RejectedPredictionTokens = readInt(val[s:e])
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
