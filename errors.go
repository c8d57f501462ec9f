package loom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// This file is the one place where errors become OpenAI error JSON and HTTP statuses.

// apiError is an error as the client sees it.
type apiError struct {
	Status  int
	Type    string // OpenAI error type
	Code    string // machine-readable code; empty encodes as null
	Param   string // offending request field; empty encodes as null
	Message string
	// Body, when set, is sent as is instead of the fields above: an upstream's own error.
	Body   []byte
	Header http.Header // extra response headers (Retry-After, upstream rate limits)
}

var (
	errUpstreamTimeout = errors.New("loom: upstream timed out")
	errBodyTooLarge    = errors.New("loom: request body too large")
	errUnreachable     = errors.New("loom: upstream unreachable")
	// errStreamInterrupted: the upstream's stream broke off after it had started.
	errStreamInterrupted = errors.New("loom: upstream stream interrupted")
	// errUpstreamProtocol: the upstream's answer is not one Loom can relay (an interim
	// 1xx status as the answer, a compressed body that is corrupt or unpacks too large).
	errUpstreamProtocol = errors.New("loom: upstream protocol error")
	// errNotDurable (strict mode): the trace's durable append failed or was not confirmed
	// in time, so the answer is held back.
	errNotDurable = errors.New("loom: trace not durable")
)

// toAPIError maps an error from the request path to what the client is told. Internal
// details never reach the client; the caller logs err.
func toAPIError(err error) *apiError {
	var (
		invalid  *provider.InvalidRequestError
		upstream *provider.UpstreamError
		api      *apiError
		param    *analytics.ParamError
	)
	switch {
	case errors.As(err, &api):
		return api
	case errors.As(err, &param):
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_parameter", Param: param.Param, Message: param.Message}
	case errors.Is(err, analytics.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "trace_not_found",
			Message: "No trace with this id exists."}
	case errors.As(err, &invalid):
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: invalid.Param, Message: invalid.Message}
	case errors.Is(err, errBodyTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
			Message: "The request body is larger than this gateway accepts."}
	case errors.Is(err, tenancy.ErrRevokedKey):
		return &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "This API key has been revoked."}
	case errors.Is(err, tenancy.ErrInvalidKey):
		return &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "Incorrect API key provided."}
	case errors.Is(err, tenancy.ErrTenantInactive):
		return &apiError{Status: http.StatusForbidden, Type: "permission_denied", Code: "tenant_inactive",
			Message: "The tenant this API key belongs to is inactive."}
	case errors.As(err, &upstream):
		return upstreamAPIError(upstream)
	case errors.Is(err, errUpstreamTimeout):
		return &apiError{Status: http.StatusGatewayTimeout, Type: "timeout", Code: "upstream_timeout",
			Message: "The upstream provider did not answer in time."}
	case errors.Is(err, errUnreachable):
		return &apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_unreachable",
			Message: "The upstream provider could not be reached."}
	case errors.Is(err, errUpstreamProtocol):
		return &apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_protocol_error",
			Message: "The upstream provider sent an answer that is not a valid HTTP response to relay."}
	case errors.Is(err, errStreamInterrupted):
		return &apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_stream_interrupted",
			Message: "The upstream provider's stream broke off before it was complete."}
	case errors.Is(err, errNotDurable):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "trace_not_durable",
			Message: "The answer was held back because its audit record could not be saved; retry shortly."}
	case errors.Is(err, errTenantProvider):
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "provider_misconfigured",
			Message: "The provider configured for this model cannot be used; the gateway's operator has the details."}
	case errors.Is(err, context.Canceled):
		// The client left; nobody reads this answer, but the trace records the status.
		return &apiError{Status: 499, Type: "client_closed_request", Message: "The client closed the request."}
	}
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "unavailable",
		Message: "The gateway cannot serve this request right now; retry shortly."}
}

// passedUpstreamHeaders are upstream response headers a client may act on.
var passedUpstreamHeaders = []string{
	"Retry-After",
	"X-Ratelimit-Limit-Requests", "X-Ratelimit-Limit-Tokens",
	"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Remaining-Tokens",
	"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens",
}

// upstreamAPIError passes an upstream's error on with its status and body. A body that is
// not an OpenAI error object is wrapped in one, so SDKs can always parse it, with an
// excerpt of the upstream's own message.
func upstreamAPIError(e *provider.UpstreamError) *apiError {
	a := &apiError{Status: e.StatusCode, Type: "upstream_error", Header: http.Header{}}
	for _, k := range passedUpstreamHeaders {
		if v := e.Header.Get(k); v != "" {
			a.Header.Set(k, v)
		}
	}
	body, decoded := provider.DecodeBytes(e.Header.Get("Content-Encoding"), e.Body, 1<<20)
	var shape struct {
		Error *struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if decoded && json.Unmarshal(body, &shape) == nil && shape.Error != nil {
		a.Body = body
		if shape.Error.Type != "" {
			a.Type = shape.Error.Type
		}
		return a
	}
	a.Message = "The upstream provider answered " + strings.TrimSpace(strconv.Itoa(e.StatusCode)+" "+http.StatusText(e.StatusCode))
	if m := excerpt(upstreamMessage(body)); decoded && m != "" {
		a.Message += ": " + m
	} else {
		a.Message += "."
	}
	return a
}

// maxExcerpt bounds the part of an upstream's own error message passed on.
const maxExcerpt = 512

// upstreamMessage finds the message in an error body of another shape than OpenAI's:
// {"error":"…"}, {"error":{"message":…}}, {"detail":…} (a string or FastAPI's list of
// {"loc","msg"}), {"message":…}, or plain text (HTML loses its tags).
func upstreamMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Detail  json.RawMessage `json:"detail"`
		Message json.RawMessage `json:"message"`
	}
	if json.Valid(body) {
		if json.Unmarshal(body, &v) != nil {
			return messageText(body) // a bare JSON string, say
		}
		for _, raw := range []json.RawMessage{v.Error, v.Detail, v.Message} {
			if m := messageText(raw); m != "" {
				return m
			}
		}
		return ""
	}
	text := string(body)
	if t := strings.TrimSpace(text); strings.HasPrefix(t, "<") {
		text = htmlTags.ReplaceAllString(t, " ")
	}
	return text
}

var htmlTags = regexp.MustCompile(`(?s)<!--.*?-->|<(script|style)\b.*?</(script|style)>|<[^>]*>`)

// messageText reads a message: a string, an object's "message" or "msg", or a list of
// FastAPI validation errors ("body.model: field required; …").
func messageText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Message json.RawMessage `json:"message"`
		Msg     string          `json:"msg"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		if m := messageText(obj.Message); m != "" {
			return m
		}
		return obj.Msg
	}
	var list []struct {
		Loc []any  `json:"loc"`
		Msg string `json:"msg"`
	}
	if json.Unmarshal(raw, &list) != nil {
		return ""
	}
	parts := make([]string, 0, len(list))
	for _, d := range list {
		loc := make([]string, len(d.Loc))
		for i, l := range d.Loc {
			loc[i] = fmt.Sprint(l)
		}
		if p := strings.Join(loc, "."); p != "" {
			parts = append(parts, p+": "+d.Msg)
		} else {
			parts = append(parts, d.Msg)
		}
	}
	return strings.Join(parts, "; ")
}

// excerpt makes an upstream's text fit to pass on: valid UTF-8, control characters and
// runs of white space as one space, at most maxExcerpt bytes (cut at a character).
func excerpt(s string) string {
	s = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "\uFFFD"), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if len(s) <= maxExcerpt {
		return s
	}
	cut := maxExcerpt - len("…")
	for !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// body returns the error's JSON: {"error":{"message":…,"type":…,"param":…,"code":…}}.
func (a *apiError) body() []byte {
	if a.Body != nil {
		return a.Body
	}
	return provider.ErrorJSON(a.Message, a.Type, a.Param, a.Code)
}

func (a *apiError) Error() string { return a.Message }

// writeError sends a as the whole response.
func writeError(w http.ResponseWriter, a *apiError) {
	h := w.Header()
	for k, v := range a.Header {
		h[k] = v
	}
	if (a.Status == http.StatusTooManyRequests || a.Status == http.StatusServiceUnavailable) && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1")
	}
	body := a.body()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.Status)
	w.Write(body)
}
