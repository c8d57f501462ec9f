package analytics

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds on what one request may ask for.
const (
	DefaultLimit  = 50
	MaxLimit      = 200
	MaxWindow     = 400 * 24 * time.Hour
	MaxPoints     = 2000
	DefaultTop    = 5
	MaxTop        = 20
	maxValues     = 1000
	defaultWindow = 24 * time.Hour
	defaultBucket = time.Hour
)

// filterParams are the query parameters that select traces.
var filterParams = []string{"model", "provider", "status", "api_key_id", "stream", "from", "to"}

// rangeParams are the query parameters of an analytics time range.
var rangeParams = []string{"window", "from", "to"}

func badParam(name, msg string) *ParamError {
	return &ParamError{Param: name, Message: "Invalid '" + name + "': " + msg}
}

// readQuery returns the request's query parameters, refusing any the endpoint does not
// take and any given twice, so a misspelt filter is an error rather than ignored.
func readQuery(r *http.Request, allowed ...[]string) (map[string]string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &ParamError{Param: "query", Message: "The query string is malformed."}
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]string, len(q))
	for _, k := range keys {
		known := false
		for _, a := range allowed {
			known = known || slices.Contains(a, k)
		}
		name := k
		if len(name) > 64 {
			name = name[:64]
		}
		if !known {
			return nil, &ParamError{Param: name, Message: "Unknown parameter '" + name + "'."}
		}
		if len(q[k]) > 1 {
			return nil, badParam(name, "given more than once.")
		}
		out[k] = q[k][0]
	}
	return out, nil
}

// parseFilter reads the filter parameters.
func parseFilter(p map[string]string) (Filter, error) {
	f := Filter{Model: p["model"], Provider: p["provider"], APIKeyID: p["api_key_id"]}
	switch s := p["status"]; s {
	case "":
	case "ok", "error":
		f.Status.Class = s
	default:
		code, err := strconv.Atoi(s)
		if err != nil || code < 100 || code > 599 {
			return f, badParam("status", "use ok, error, or an HTTP status code.")
		}
		f.Status.Code = code
	}
	if s, ok := p["stream"]; ok {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return f, badParam("stream", "use true or false.")
		}
		f.Stream = &b
	}
	var err error
	if f.From, err = parseTime(p, "from"); err != nil {
		return f, err
	}
	if f.To, err = parseTime(p, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) {
		return f, badParam("to", "it is before 'from'.")
	}
	return f, nil
}

func parseTime(p map[string]string, name string) (time.Time, error) {
	s, ok := p[name]
	if !ok {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 1 {
		return time.Time{}, badParam(name, "use an RFC 3339 time such as 2026-01-02T15:04:05Z.")
	}
	// Both stores keep microseconds (PostgreSQL would round a finer time, SQLite truncate).
	return t.UTC().Truncate(time.Microsecond), nil
}

// parseDuration reads a duration: Go's form (90m, 1h30m) or whole days (7d).
func parseDuration(s string) (time.Duration, bool) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100000 {
			return 0, false
		}
		return time.Duration(n) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d > 0
}

// parseRange reads an analytics time range: from/to, or a window ending at to (default
// now); default window 24 hours. With optional set and no parameter given, it returns zero
// times (everything).
func parseRange(p map[string]string, now time.Time, optional bool) (from, to time.Time, err error) {
	_, hasWindow := p["window"]
	_, hasFrom := p["from"]
	_, hasTo := p["to"]
	if optional && !hasWindow && !hasFrom && !hasTo {
		return time.Time{}, time.Time{}, nil
	}
	if hasWindow && hasFrom {
		return from, to, badParam("window", "give either 'window' or 'from', not both.")
	}
	if from, err = parseTime(p, "from"); err != nil {
		return
	}
	if to, err = parseTime(p, "to"); err != nil {
		return
	}
	if to.IsZero() {
		to = now.UTC().Truncate(time.Microsecond)
	}
	if from.IsZero() {
		window := defaultWindow
		if hasWindow {
			w, ok := parseDuration(p["window"])
			if !ok {
				return from, to, badParam("window", "use a duration such as 24h, 90m or 7d.")
			}
			if w > MaxWindow {
				return from, to, badParam("window", "it is longer than 400 days.")
			}
			window = w
		}
		from = to.Add(-window)
	}
	if to.Before(from) {
		return from, to, badParam("to", "it is before 'from'.")
	}
	if to.Sub(from) > MaxWindow {
		return from, to, badParam("from", "the range is longer than 400 days.")
	}
	return from, to, nil
}

// parseInt reads an integer parameter in [lo, hi], def when absent.
func parseInt(p map[string]string, name string, def, lo, hi int) (int, error) {
	s, ok := p[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, badParam(name, fmt.Sprintf("use an integer from %d to %d.", lo, hi))
	}
	return n, nil
}
