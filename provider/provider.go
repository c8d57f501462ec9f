package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Provider sends chat completion requests to one upstream.
//
// Chat sends req and returns the upstream's answer in the OpenAI wire format: a chat
// completion JSON body, or for req.Stream an SSE stream of chat.completion.chunk events
// ending with "data: [DONE]". An upstream that answers with a non-2xx status yields a
// *UpstreamError carrying that status and body. The call is bound to ctx: when ctx ends,
// the upstream request is cancelled and Body reads fail. The caller closes Body.
// Implementations must be safe for concurrent use.
type Provider interface {
	Chat(ctx context.Context, req *Request) (*Response, error)
}

// Request is a chat completion request on its way upstream.
type Request struct {
	// Model is the upstream's name of the model (the routing prefix removed); for Azure it
	// is the deployment.
	Model string
	// Body is the OpenAI chat completion request JSON, already carrying Model and, for
	// streams, stream_options.include_usage. Adapters that speak OpenAI send it unchanged
	// (Azure removes stream_options for api-versions that refuse it).
	Body   []byte
	Stream bool
	// Header holds client headers to pass on (for example OpenAI-Organization); may be nil.
	Header http.Header
}

// Response is an upstream's successful answer.
type Response struct {
	// StatusCode is a final 2xx status; the gateway answers anything else (an interim 1xx
	// a RoundTripper handed on) with a 502.
	StatusCode int
	// Header holds the upstream's response headers worth passing on (rate limits,
	// processing time); may be nil. Body is read as its Content-Encoding says (see
	// DecodeBody).
	Header http.Header
	Body   io.ReadCloser
	// ContentLength is Body's length, or -1 when unknown (as for streams).
	ContentLength int64
	// Usage, if not nil, is the usage in full as an adapter that translates the upstream's
	// answer read it, including what the OpenAI wire format cannot carry (Anthropic's
	// cache writes, in CacheWrite5mTokens and CacheWrite1hTokens). For a stream it is
	// final once Body has returned io.EOF. The usage in Body stays what the client sees.
	Usage *Usage
}

// UpstreamError is an upstream's non-2xx answer. Body is what it sent, usually an OpenAI
// error JSON; the gateway passes status and body on to the client.
type UpstreamError struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("provider: upstream answered %d", e.StatusCode)
}

// ErrorJSON encodes an OpenAI error body, {"error":{"message","type","param","code"}}; an
// empty param or code encodes as null, as OpenAI sends them.
func ErrorJSON(message, typ, param, code string) []byte {
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	e.Error.Message, e.Error.Type = message, typ
	if param != "" {
		e.Error.Param = &param
	}
	if code != "" {
		e.Error.Code = &code
	}
	b, _ := json.Marshal(e) // plain struct: cannot fail
	return b
}
