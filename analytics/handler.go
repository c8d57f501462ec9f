package analytics

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// Store answers the queries. Required.
	Store Store
	// Tenant authenticates a request and returns the tenant it may read; its error is
	// passed to WriteError as is (the gateway's authentication errors). Required.
	Tenant func(r *http.Request) (tenantID string, err error)
	// WriteError answers a request with err: a *ParamError (400, naming the parameter),
	// ErrNotFound (404), an error from Tenant, or an internal error. Required: the
	// gateway owns the mapping of errors to OpenAI error JSON.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
	// Open decrypts one body of a trace (part is "request" or "response") sealed under
	// keyVersion. If nil, GET /v1/traces/{id} returns no bodies and says so. Which record
	// id the bodies are sealed under is the caller's business.
	Open func(tenantID, traceID, part string, keyVersion int, sealed []byte) ([]byte, error)
	// Now reads the clock (the end of a window). If nil, time.Now is used.
	Now func() time.Time
	// Logger receives internal errors (never bodies). If nil, nothing is logged.
	Logger *slog.Logger
}

// Handler serves the analytics API (see Paths), every answer scoped to the tenant
// HandlerConfig.Tenant returns. Register it for exactly the GET patterns of Paths: other
// methods are the mounting mux's business.
type Handler struct {
	cfg HandlerConfig
	log *slog.Logger
	mux *http.ServeMux
}

// Paths are the URL patterns the Handler serves, each for GET.
func Paths() []string {
	return []string{
		"/v1/traces",
		"/v1/traces/export",
		"/v1/traces/{id}",
		"/v1/analytics/summary",
		"/v1/analytics/timeseries",
		"/v1/analytics/values",
		"/v1/analytics/usage",
	}
}

// NewHandler returns a Handler for cfg.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Store == nil || cfg.Tenant == nil || cfg.WriteError == nil {
		return nil, errors.New("analytics: HandlerConfig needs Store, Tenant and WriteError")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	routes := map[string]func(http.ResponseWriter, *http.Request, string) error{
		"/v1/traces":               h.list,
		"/v1/traces/export":        h.export,
		"/v1/traces/{id}":          h.get,
		"/v1/analytics/summary":    h.summary,
		"/v1/analytics/timeseries": h.timeseries,
		"/v1/analytics/values":     h.values,
		"/v1/analytics/usage":      h.usage,
	}
	for p, fn := range routes { // the same paths as Paths
		h.mux.HandleFunc("GET "+p, h.serve(fn))
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// serve authenticates the request, then runs fn for the tenant.
func (h *Handler) serve(fn func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenantID, err := h.cfg.Tenant(r)
		if err != nil {
			h.cfg.WriteError(w, r, err)
			return
		}
		if err := fn(w, r, tenantID); err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) && !errors.Is(err, ErrNotFound) && r.Context().Err() == nil {
				h.log.Error("analytics request failed", "path", r.URL.Path, "err", err)
			}
			h.cfg.WriteError(w, r, err)
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("analytics: encode answer: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	_, err = w.Write(b)
	return err
}

// ListPage is the answer of GET /v1/traces.
type ListPage struct {
	Object     string  `json:"object"` // "list"
	Data       []Trace `json:"data"`
	HasMore    bool    `json:"has_more"`
	NextCursor *string `json:"next_cursor"` // pass as cursor for the next page; null on the last
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, filterParams, []string{"cursor", "limit"})
	if err != nil {
		return err
	}
	f, err := parseFilter(p)
	if err != nil {
		return err
	}
	limit, err := parseInt(p, "limit", DefaultLimit, 1, MaxLimit)
	if err != nil {
		return err
	}
	var after *Cursor
	if s, ok := p["cursor"]; ok {
		c, err := DecodeCursor(s)
		if err != nil {
			return badParam("cursor", "use the next_cursor of a previous page.")
		}
		after = &c
	}
	traces, err := h.cfg.Store.List(r.Context(), tenantID, f, after, limit+1)
	if err != nil {
		return err
	}
	page := ListPage{Object: "list", Data: traces}
	if len(traces) > limit {
		page.Data, page.HasMore = traces[:limit], true
		last := page.Data[limit-1]
		next := Cursor{CreatedAt: last.CreatedAt, ID: last.ID}.Encode()
		page.NextCursor = &next
	}
	return writeJSON(w, page)
}

// Detail is the answer of GET /v1/traces/{id}: the trace with its decrypted bodies.
type Detail struct {
	Trace
	// RequestBody and ResponseBody are the bodies as text (null when none was kept or
	// they cannot be decrypted; bytes that are not UTF-8 show as U+FFFD).
	RequestBody  *string `json:"request_body"`
	ResponseBody *string `json:"response_body"`
	// BodyError says why bodies that were kept are not shown.
	BodyError string `json:"body_error,omitempty"`
	// Answer is a stream's answer reassembled from its captured events.
	Answer *Answer `json:"answer,omitempty"`
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, tenantID string) error {
	if _, err := readQuery(r); err != nil {
		return err
	}
	s, err := h.cfg.Store.Get(r.Context(), tenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	d := Detail{Trace: s.Trace}
	var response []byte
	for _, b := range [...]struct {
		part   string
		sealed []byte
		dst    **string
	}{{"request", s.SealedRequest, &d.RequestBody}, {"response", s.SealedResponse, &d.ResponseBody}} {
		if len(b.sealed) == 0 {
			continue
		}
		if h.cfg.Open == nil {
			d.BodyError = "This gateway has no key to decrypt trace bodies."
			continue
		}
		plain, err := h.cfg.Open(tenantID, s.ID, b.part, s.KeyVersion, b.sealed)
		if err != nil {
			h.log.Warn("trace body not decrypted", "trace_id", s.ID, "part", b.part, "err", err)
			d.BodyError = "The bodies cannot be decrypted (the key version is not configured, or the tenant's key was destroyed)."
			continue
		}
		text := string(plain)
		*b.dst = &text
		if b.part == "response" {
			response = plain
		}
	}
	if s.Stream && response != nil {
		a := Reassemble(response)
		d.Answer = &a
	}
	return writeJSON(w, d)
}

// Period is one time range's metrics.
type Period struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	Metrics
}

// Summary is the answer of GET /v1/analytics/summary: the range asked for and the one of
// equal length before it.
type Summary struct {
	Current  Period `json:"current"`
	Previous Period `json:"previous"`
}

func (h *Handler) summary(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, rangeParams)
	if err != nil {
		return err
	}
	from, to, err := parseRange(p, h.cfg.Now(), false)
	if err != nil {
		return err
	}
	var s Summary
	for _, x := range [...]struct {
		dst      *Period
		from, to time.Time
	}{{&s.Current, from, to}, {&s.Previous, from.Add(-to.Sub(from)), from}} {
		x.dst.From, x.dst.To = x.from, x.to
		var sums Sums
		if x.to.After(x.from) {
			buckets, err := h.cfg.Store.Metrics(r.Context(), tenantID, MetricsQuery{From: x.from, To: x.to, Origin: x.from, Bucket: x.to.Sub(x.from)})
			if err != nil {
				return err
			}
			if len(buckets) > 0 {
				sums = buckets[0].Sums
			}
		}
		x.dst.Metrics = sums.Metrics()
	}
	return writeJSON(w, s)
}

// Series is the answer of GET /v1/analytics/timeseries.
type Series struct {
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
	BucketSeconds int64     `json:"bucket_seconds"`
	// Points are the totals per bucket, every bucket present (zeros when empty).
	Points []Point `json:"points"`
	// GroupBy and Groups, with group_by: the same per value, the top values first and the
	// rest together in one group with Other set.
	GroupBy string  `json:"group_by,omitempty"`
	Groups  []Group `json:"groups,omitempty"`
}

// Point is one bucket's metrics; Start is the bucket's start (UTC).
type Point struct {
	Start time.Time `json:"start"`
	Metrics
}

// Group is one value's series.
type Group struct {
	Value  string  `json:"value"`
	Other  bool    `json:"other"`
	Points []Point `json:"points"`
}

var groupFields = map[string]Field{"model": FieldModel, "provider": FieldProvider, "api_key": FieldAPIKey}

func (h *Handler) timeseries(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, rangeParams, []string{"bucket", "group_by", "top"})
	if err != nil {
		return err
	}
	from, to, err := parseRange(p, h.cfg.Now(), false)
	if err != nil {
		return err
	}
	bucket := defaultBucket
	if s, ok := p["bucket"]; ok {
		d, ok := parseDuration(s)
		if !ok || d%time.Second != 0 {
			return badParam("bucket", "use a whole number of seconds or more, such as 1h, 5m or 1d.")
		}
		bucket = d
	}
	origin := from.Truncate(bucket)
	n := int64(0)
	if to.After(origin) {
		n = int64((to.Sub(origin) + bucket - 1) / bucket)
	}
	if n > MaxPoints {
		return badParam("bucket", fmt.Sprintf("the range holds %d buckets of it, more than %d.", n, MaxPoints))
	}
	var field Field
	if s, ok := p["group_by"]; ok {
		if field, ok = groupFields[s]; !ok {
			return badParam("group_by", "use model, provider or api_key.")
		}
	}
	top, err := parseInt(p, "top", DefaultTop, 1, MaxTop)
	if err != nil {
		return err
	}
	out := Series{From: from, To: to, BucketSeconds: int64(bucket / time.Second), Points: []Point{}}
	points := func(buckets []Bucket) []Point {
		byStart := make(map[int64]Sums, len(buckets))
		for _, b := range buckets {
			byStart[b.Start.UnixMicro()] = b.Sums
		}
		pts := make([]Point, n)
		for i := range pts {
			start := origin.Add(time.Duration(i) * bucket)
			pts[i] = Point{Start: start, Metrics: byStart[start.UnixMicro()].Metrics()}
		}
		return pts
	}
	mq := MetricsQuery{From: from, To: to, Origin: origin, Bucket: bucket}
	if n > 0 {
		totals, err := h.cfg.Store.Metrics(r.Context(), tenantID, mq)
		if err != nil {
			return err
		}
		out.Points = points(totals)
	}
	if field == "" {
		return writeJSON(w, out)
	}
	out.GroupBy, out.Groups = p["group_by"], []Group{}
	if n == 0 {
		return writeJSON(w, out)
	}
	values, err := h.cfg.Store.Values(r.Context(), tenantID, field, from, to, top)
	if err != nil {
		return err
	}
	mq.GroupBy = field
	for _, v := range values {
		mq.Keep = append(mq.Keep, v.Value)
	}
	grouped, err := h.cfg.Store.Metrics(r.Context(), tenantID, mq)
	if err != nil {
		return err
	}
	split := map[string][]Bucket{}
	var other []Bucket
	for _, b := range grouped {
		if b.Other {
			other = append(other, b)
		} else {
			split[b.Group] = append(split[b.Group], b)
		}
	}
	for _, v := range mq.Keep {
		out.Groups = append(out.Groups, Group{Value: v, Points: points(split[v])})
	}
	if len(other) > 0 {
		out.Groups = append(out.Groups, Group{Value: "other", Other: true, Points: points(other)})
	}
	return writeJSON(w, out)
}

// ValueList is the answer of GET /v1/analytics/values.
type ValueList struct {
	Object  string  `json:"object"` // "list"
	Field   string  `json:"field"`
	Data    []Value `json:"data"` // most requests first
	HasMore bool    `json:"has_more"`
}

var valueFields = map[string]Field{"model": FieldModel, "provider": FieldProvider, "api_key_id": FieldAPIKey, "status": FieldStatus}

func (h *Handler) values(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, rangeParams, []string{"field"})
	if err != nil {
		return err
	}
	field, ok := valueFields[p["field"]]
	if !ok {
		return badParam("field", "use model, provider, api_key_id or status.")
	}
	from, to, err := parseRange(p, h.cfg.Now(), true)
	if err != nil {
		return err
	}
	vals, err := h.cfg.Store.Values(r.Context(), tenantID, field, from, to, maxValues+1)
	if err != nil {
		return err
	}
	out := ValueList{Object: "list", Field: p["field"], Data: vals}
	if len(vals) > maxValues {
		out.Data, out.HasMore = vals[:maxValues], true
	}
	return writeJSON(w, out)
}
