package tracing

// Store-safe text: every text field of a trace may come from a client or an upstream (the
// model asked for, the request id header, the served model, an error type), and any byte
// can arrive there. PostgreSQL refuses NUL and invalid UTF-8 in text, and a field of a few
// megabytes would make every index on it fail, so one such request would stop the batch it
// is in, for every tenant. The pipeline therefore makes each text field acceptable to every
// built-in store before the trace is spooled (writer.go, prepare): a custom Sink gets the
// same guarantee. Bodies are sealed bytes and are never touched.

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// Maximum length in bytes of each text field of a trace, after it was made store-safe. A
// longer value is cut at the last whole UTF-8 character that fits, and the trace is marked
// with Trace.FieldsCut.
const (
	MaxIDBytes           = 64  // Trace.ID (a UUID is 36)
	MaxTenantIDBytes     = 128 // Trace.TenantID
	MaxAPIKeyIDBytes     = 128 // Trace.APIKeyID
	MaxRequestIDBytes    = 256 // Trace.RequestID, the client's X-Request-Id
	MaxModelBytes        = 256 // Trace.Model and Trace.ServedModel
	MaxProviderBytes     = 128 // Trace.Provider
	MaxErrorTypeBytes    = 128 // Trace.ErrorType
	MaxUsageSourceBytes  = 32  // Trace.UsageSource
	MaxPriceVersionBytes = 128 // Trace.PriceVersion
	MaxW3CBytes          = 512 // each W3C* field (ids are 32 and 16; a tracestate beyond 512 need not be propagated)
	MaxFinishReasonBytes = 64  // each of Trace.FinishReasons (the longest known, "content_filter", is 14)
	MaxFinishReasons     = 8   // how many Trace.FinishReasons are kept (OpenAI knows 5), the first ones
)

// makeStoreSafe makes every text field of t valid UTF-8 (each run of invalid bytes becomes
// U+FFFD), without NUL (each becomes U+FFFD) and at most its maximum length, and sets
// t.FieldsCut if it changed anything.
func makeStoreSafe(t *Trace) {
	changed := false
	fix := func(s *string, limit int) {
		if v, ok := storeSafe(*s, limit); !ok {
			*s, changed = v, true
		}
	}
	fix(&t.ID, MaxIDBytes)
	fix(&t.TenantID, MaxTenantIDBytes)
	fix(&t.APIKeyID, MaxAPIKeyIDBytes)
	fix(&t.RequestID, MaxRequestIDBytes)
	fix(&t.Model, MaxModelBytes)
	fix(&t.ServedModel, MaxModelBytes)
	fix(&t.Provider, MaxProviderBytes)
	fix(&t.ErrorType, MaxErrorTypeBytes)
	us := string(t.UsageSource)
	fix(&us, MaxUsageSourceBytes)
	t.UsageSource = UsageSource(us)
	fix(&t.PriceVersion, MaxPriceVersionBytes)
	for _, w := range [...]*string{&t.W3CTraceID, &t.W3CSpanID, &t.W3CParentSpanID, &t.W3CTraceState} {
		fix(w, MaxW3CBytes)
	}
	if fr, ok := storeSafeList(t.FinishReasons, MaxFinishReasons, MaxFinishReasonBytes); !ok {
		t.FinishReasons, changed = fr, true
	}
	if changed {
		t.FieldsCut = true
	}
}

// storeSafeList returns list with each element made store-safe and cut to limit bytes, at
// most n elements and each once (making two store-safe can make them equal), and whether
// list already was all that. A changed list is a new slice: list may be shared.
func storeSafeList(list []string, n, limit int) ([]string, bool) {
	ok := len(list) <= n
	for i, s := range list {
		if _, safe := storeSafe(s, limit); !safe || s == "" || slices.Contains(list[:i], s) {
			ok = false
		}
	}
	if ok {
		return list, true
	}
	var out []string
	for _, s := range list {
		s, _ = storeSafe(s, limit)
		if s != "" && len(out) < n && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, false
}

// storeSafe returns s made store-safe and cut to limit bytes, and whether s already was.
func storeSafe(s string, limit int) (string, bool) {
	if len(s) <= limit && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s, true
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) > limit {
		i := limit
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s, false
}
