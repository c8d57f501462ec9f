package analytics_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// TestAPI runs the analytics API suite against each database, through the gateway over
// loopback, each test on a fresh database.
func TestAPI(t *testing.T) {
	tests := []struct {
		name string
		run  func(*testing.T, *apiEnv)
	}{
		{"ThroughGateway", testThroughGateway},
		{"RecordedStreamAndHostileBodies", testRecordedStreamAndHostileBodies},
		{"Pagination", testPagination},
		{"Filters", testFilters},
		{"Summary", testSummary},
		{"SummaryWindow", testSummaryWindow},
		{"SummaryEdges", testSummaryEdges},
		{"Timeseries", testTimeseries},
		{"Values", testValues},
		{"Export", testExport},
		{"TenantIsolation", testTenantIsolation},
		{"BadParameters", testBadParameters},
		{"Authentication", testAuthentication},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) { tt.run(t, newAPIEnv(t, be)) })
			}
		})
	}
}

// testThroughGateway sends requests with the OpenAI SDK and reads their traces back,
// bodies decrypted and the stream's answer reassembled.
func testThroughGateway(t *testing.T, e *apiEnv) {
	ctx := context.Background()
	client := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(e.a.key), option.WithMaxRetries(0))
	prompt := `hello <img src=x onerror=alert(1)></script> "quoted"`
	var plainResp, streamResp *http.Response
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "mock-1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}, option.WithResponseInto(&plainResp)); err != nil {
		t.Fatal(err)
	}
	s := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "mock-1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}, option.WithResponseInto(&streamResp))
	for s.Next() {
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	plainID, streamID := plainResp.Header.Get("X-Request-Id"), streamResp.Header.Get("X-Request-Id")

	// The gateway records a trace just after the client got the last byte: wait for both.
	rows := waitTraces(t, e, e.a, 2)
	if diff := cmp.Diff([]string{streamID, plainID}, ids(rows)); diff != "" {
		t.Fatalf("listed traces (-want +got):\n%s", diff)
	}
	for i, r := range rows {
		if r.TenantID != e.a.id || r.APIKeyID != e.a.keyID || r.Model != "mock-1" || r.Provider != "mock" ||
			r.Status != 200 || r.Stream != (i == 0) || r.UsageSource != "reported" || r.PromptTokens == 0 || r.LatencyUS == 0 {
			t.Errorf("trace %d: %+v", i, r)
		}
	}

	var plain, streamed analytics.Detail
	e.getJSON(t, e.a.key, "/v1/traces/"+plainID, &plain)
	e.getJSON(t, e.a.key, "/v1/traces/"+streamID, &streamed)
	if diff := cmp.Diff(rows[1], plain.Trace); diff != "" {
		t.Errorf("detail fields differ from the list (-want +got):\n%s", diff)
	}
	for _, d := range []analytics.Detail{plain, streamed} {
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		if d.RequestBody == nil || json.Unmarshal([]byte(*d.RequestBody), &req) != nil || len(req.Messages) != 1 || req.Messages[0].Content != prompt {
			t.Errorf("trace %s: request body %v does not carry the prompt", d.ID, d.RequestBody)
		}
	}
	var completion struct {
		Choices []struct{ Message struct{ Content string } } `json:"choices"`
	}
	if plain.ResponseBody == nil || json.Unmarshal([]byte(*plain.ResponseBody), &completion) != nil ||
		len(completion.Choices) != 1 || completion.Choices[0].Message.Content != provider.MockReply(prompt) {
		t.Errorf("response body: %v", plain.ResponseBody)
	}
	if plain.Answer != nil {
		t.Errorf("a non-streamed trace has a reassembled answer: %+v", plain.Answer)
	}
	want := &analytics.Answer{Done: true, Choices: []analytics.AnswerChoice{{Role: "assistant", Content: provider.MockReply(prompt), FinishReason: "stop"}}}
	if diff := cmp.Diff(want, streamed.Answer); diff != "" {
		t.Errorf("reassembled answer (-want +got):\n%s", diff)
	}

	// Another tenant's key: the trace does not exist, exactly like a made-up id.
	status, _, body := e.get(t, e.b.key, "/v1/traces/"+plainID)
	missingStatus, _, missing := e.get(t, e.b.key, "/v1/traces/"+uuid.Must(uuid.NewV7()).String())
	if status != http.StatusNotFound || status != missingStatus || !bytes.Equal(body, missing) {
		t.Errorf("another tenant's trace: %d %s; a missing one: %d %s", status, body, missingStatus, missing)
	}
}

// waitTraces flushes the gateway until tk's key lists n traces, bounded.
func waitTraces(t *testing.T, e *apiEnv, tk tenantKey, n int) []analytics.Trace {
	t.Helper()
	var rows []analytics.Trace
	for deadline := time.Now().Add(10 * time.Second); len(rows) < n && time.Now().Before(deadline); {
		if err := e.gw.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rows = e.listAll(t, tk.key, "")
	}
	if len(rows) != n {
		t.Fatalf("%d traces listed, want %d", len(rows), n)
	}
	return rows
}

// testRecordedStreamAndHostileBodies: a recorded upstream stream with parallel tool calls
// is reassembled in the trace detail, and a request body with NUL and invalid UTF-8 comes
// back as valid JSON text.
func testRecordedStreamAndHostileBodies(t *testing.T, e *apiEnv) {
	post := func(body string) string {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.a.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	streamID := post(`{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"secrets please"}]}`)
	hostile := "{\"model\":\"mock-1\",\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff\x00 <script>\"}]}"
	hostileID := post(hostile)
	waitTraces(t, e, e.a, 2)

	var d analytics.Detail
	e.getJSON(t, e.a.key, "/v1/traces/"+streamID, &d)
	call := func(index int, id, args string) analytics.ToolCall {
		c := analytics.ToolCall{Index: index, ID: id, Type: "function"}
		c.Function.Name, c.Function.Arguments = "secret_retrieval_tool", args
		return c
	}
	want := &analytics.Answer{Done: true, Choices: []analytics.AnswerChoice{{Role: "assistant", FinishReason: "tool_calls", ToolCalls: []analytics.ToolCall{
		call(0, "call_M26z19sncd7b4LBgzKRRbaUE", `{"password": "mellon"}`),
		call(1, "call_KPXe5NX7IcKkaBUhc6dto2QV", `{"password": "radiance"}`),
	}}}}
	if diff := cmp.Diff(want, d.Answer); diff != "" {
		t.Errorf("reassembled answer (-want +got):\n%s", diff)
	}
	if d.Model != "openai/gpt-4o" || d.Provider != "openai" || d.ServedModel != "gpt-4o-2024-08-06" || d.PromptTokens != 75 || d.CompletionTokens != 53 {
		t.Errorf("stream trace %+v", d.Trace)
	}

	status, _, body := e.get(t, e.a.key, "/v1/traces/"+hostileID)
	var h analytics.Detail
	if status != http.StatusOK || json.Unmarshal(body, &h) != nil {
		t.Fatalf("hostile body trace: %d %q", status, body)
	}
	if want := strings.ToValidUTF8(hostile, "\uFFFD"); h.RequestBody == nil || *h.RequestBody != want {
		t.Errorf("request body %v, want %q", h.RequestBody, want)
	}
}

// testPagination pages through traces sharing created_at microseconds while newer traces
// arrive between and during the page requests: every trace once, in order.
func testPagination(t *testing.T, e *apiEnv) {
	base := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	var mine, others []*tracing.Trace
	for i := range 300 {
		at := base.Add(time.Duration(i/60) * time.Microsecond) // 5 microseconds, 60 traces each
		mine = append(mine, newTrace(e.a, at))
		if i%5 == 0 {
			others = append(others, newTrace(e.b, at))
		}
	}
	e.insert(t, append(mine, others...)...)
	want := ids(newestFirst(mine, nil))

	var first analytics.ListPage
	e.getJSON(t, e.a.key, "/v1/traces", &first)
	if len(first.Data) != analytics.DefaultLimit || !first.HasMore || first.NextCursor == nil {
		t.Fatalf("default page: %d rows, has_more %v", len(first.Data), first.HasMore)
	}

	// Newer traces keep arriving: in the background, and between every two pages.
	later := base.Add(time.Hour)
	newer := func(n int) []*tracing.Trace {
		var out []*tracing.Trace
		for range n {
			out = append(out, newTrace(e.a, later)) // these share a microsecond too
		}
		return out
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	insertInBackground := func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.sink.WriteBatch(context.Background(), newer(3)); err != nil {
				t.Error(err)
				return
			}
		}
	}
	var got []string
	path := "/v1/traces?limit=7"
	for len(got) <= 2*len(want) { // a cursor that never ends fails instead of hanging
		var p analytics.ListPage
		e.getJSON(t, e.a.key, path, &p)
		got = append(got, ids(p.Data)...)
		if !p.HasMore {
			break
		}
		if path == "/v1/traces?limit=7" { // after the first page, read before any newer trace existed
			wg.Add(1)
			go insertInBackground()
		}
		e.insert(t, newer(2)...)
		path = "/v1/traces?limit=7&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	close(stop)
	wg.Wait()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paged ids (-want +got):\n%s", diff)
	}
}

// filterTraces is a tenant's varied traces, and some of another tenant.
func filterTraces(e *apiEnv, base time.Time) (mine, others []*tracing.Trace) {
	models := []string{"gpt-4o", "claude-3", `=cmd|' /C calc'!A0`}
	providers := []string{"openai", "anthropic"}
	statuses := []int{200, 200, 400, 429, 500, 499}
	for i := range 120 {
		tr := newTrace(e.a, base.Add(time.Duration(i)*time.Minute))
		tr.Model, tr.Provider, tr.Status, tr.Stream = models[i%3], providers[i%2], statuses[i%6], i%4 == 0
		if i%5 == 0 {
			tr.APIKeyID = "key-second"
		}
		mine = append(mine, tr)
		o := newTrace(e.b, tr.CreatedAt)
		o.Model, o.Provider, o.Status, o.Stream = tr.Model, tr.Provider, tr.Status, tr.Stream
		others = append(others, o)
	}
	return mine, others
}

// testFilters checks every filter on the list and on the export against the rows the
// test selects itself.
func testFilters(t *testing.T, e *apiEnv) {
	base := time.Date(2026, 6, 2, 0, 0, 0, 0, time.UTC)
	mine, others := filterTraces(e, base)
	e.insert(t, append(mine, others...)...)
	from, to := base.Add(30*time.Minute), base.Add(90*time.Minute)
	rfc := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }
	tests := []struct {
		name  string
		query string
		keep  func(*tracing.Trace) bool
	}{
		{"none", "", func(*tracing.Trace) bool { return true }},
		{"model", "model=claude-3", func(t *tracing.Trace) bool { return t.Model == "claude-3" }},
		{"model with formula characters", "model=" + url.QueryEscape(`=cmd|' /C calc'!A0`), func(t *tracing.Trace) bool { return t.Model[0] == '=' }},
		{"provider", "provider=anthropic", func(t *tracing.Trace) bool { return t.Provider == "anthropic" }},
		{"status ok", "status=ok", func(t *tracing.Trace) bool { return t.Status < 400 }},
		{"status error", "status=error", func(t *tracing.Trace) bool { return t.Status >= 400 }},
		{"status code", "status=429", func(t *tracing.Trace) bool { return t.Status == 429 }},
		{"api key", "api_key_id=key-second", func(t *tracing.Trace) bool { return t.APIKeyID == "key-second" }},
		{"stream", "stream=true", func(t *tracing.Trace) bool { return t.Stream }},
		{"not stream", "stream=false", func(t *tracing.Trace) bool { return !t.Stream }},
		{"from", "from=" + rfc(from), func(t *tracing.Trace) bool { return !t.CreatedAt.Before(from) }},
		{"to", "to=" + rfc(to), func(t *tracing.Trace) bool { return t.CreatedAt.Before(to) }},
		{"from and to, with an offset", "from=" + url.QueryEscape(from.In(time.FixedZone("", 3600)).Format(time.RFC3339)) + "&to=" + rfc(to),
			func(t *tracing.Trace) bool { return !t.CreatedAt.Before(from) && t.CreatedAt.Before(to) }},
		{"combined", "model=gpt-4o&status=ok&stream=false&from=" + rfc(from), func(t *tracing.Trace) bool {
			return t.Model == "gpt-4o" && t.Status < 400 && !t.Stream && !t.CreatedAt.Before(from)
		}},
		{"no match", "model=nope", func(*tracing.Trace) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := newestFirst(mine, tt.keep)
			if diff := cmp.Diff(want, e.listAll(t, e.a.key, tt.query)); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, exportJSONL(t, e, e.a.key, tt.query)); diff != "" {
				t.Errorf("export (-want +got):\n%s", diff)
			}
		})
	}
}

func exportJSONL(t *testing.T, e *apiEnv, key, query string) []analytics.Trace {
	t.Helper()
	status, h, body := e.get(t, key, "/v1/traces/export?format=jsonl&"+query)
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/jsonl") {
		t.Fatalf("export: %d %s %s", status, h.Get("Content-Type"), body)
	}
	var out []analytics.Trace
	dec := json.NewDecoder(bytes.NewReader(body))
	for dec.More() {
		var r analytics.Trace
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// randomTraces makes n traces of tk spread over [from, to) with varied figures: errors,
// unpriced requests, no first byte.
func randomTraces(rnd *rand.Rand, tk tenantKey, from, to time.Time, n int) []*tracing.Trace {
	var out []*tracing.Trace
	span := to.Sub(from).Microseconds()
	for range n {
		tr := newTrace(tk, from.Add(time.Duration(rnd.Int64N(span))*time.Microsecond))
		tr.Status = []int{200, 200, 200, 400, 429, 502}[rnd.IntN(6)]
		tr.PromptTokens, tr.CompletionTokens = rnd.Int64N(5000), rnd.Int64N(2000)
		tr.CachedTokens, tr.ReasoningTokens = rnd.Int64N(tr.PromptTokens+1), rnd.Int64N(tr.CompletionTokens+1)
		if rnd.IntN(4) == 0 {
			tr.CostMicroUSD = nil
		} else {
			c := rnd.Int64N(100000)
			tr.CostMicroUSD = &c
		}
		tr.LatencyUS = 1 + rnd.Int64N(3_000_000)
		tr.TTFBUS = 0
		if rnd.IntN(5) > 0 {
			tr.TTFBUS = 1 + rnd.Int64N(tr.LatencyUS)
		}
		tr.OverheadUS = rnd.Int64N(2000)
		tr.Model = []string{"gpt-4o", "gpt-4o-mini", "claude-3"}[rnd.IntN(3)]
		out = append(out, tr)
	}
	return out
}

// testSummary checks every figure of a range and of the range before it against what the
// test computes from the rows it inserted, edges included.
func testSummary(t *testing.T, e *apiEnv) {
	rnd := rand.New(rand.NewPCG(1, 2))
	to := time.Date(2026, 6, 10, 0, 0, 0, 0, time.UTC)
	from := to.Add(-6 * time.Hour)
	prevFrom := from.Add(-6 * time.Hour)
	cur := randomTraces(rnd, e.a, from, to, 400)
	prev := randomTraces(rnd, e.a, prevFrom, from, 150)
	cur = append(cur, newTrace(e.a, from))         // the first microsecond is in
	prev = append(prev, newTrace(e.a, prevFrom))   // so is the previous range's
	outside := []*tracing.Trace{newTrace(e.a, to), // the end is out
		newTrace(e.a, prevFrom.Add(-time.Microsecond))} // and so is before the previous range
	foreign := randomTraces(rnd, e.b, prevFrom, to, 100) // another tenant's
	e.insert(t, slices.Concat(cur, prev, outside, foreign)...)

	var got analytics.Summary
	e.getJSON(t, e.a.key, "/v1/analytics/summary?from="+from.Format(time.RFC3339)+"&to="+to.Format(time.RFC3339), &got)
	want := analytics.Summary{
		Current:  analytics.Period{From: from, To: to, Metrics: expect(cur)},
		Previous: analytics.Period{From: prevFrom, To: from, Metrics: expect(prev)},
	}
	if want.Current.UnpricedRequests == 0 || want.Current.Errors == 0 {
		t.Fatal("the generated rows lack unpriced requests or errors")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}

	// An empty range: zeros, and null where there is nothing to average.
	e.getJSON(t, e.a.key, "/v1/analytics/summary?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z", &got)
	if diff := cmp.Diff(analytics.Metrics{}, got.Current.Metrics); diff != "" {
		t.Errorf("empty range (-want +got):\n%s", diff)
	}
}

// testSummaryEdges: a range whose ends are not on minute boundaries is answered from the
// rollups in the middle and the traces at its ends, exactly for every count and sum; traces
// crowd both ends, on both sides of each.
func testSummaryEdges(t *testing.T, e *apiEnv) {
	rnd := rand.New(rand.NewPCG(5, 6))
	from := time.Date(2026, 7, 1, 10, 7, 31, 123456000, time.UTC)
	to := time.Date(2026, 7, 2, 16, 52, 10, 654321000, time.UTC)
	prevFrom := from.Add(-to.Sub(from))
	var all []*tracing.Trace
	for _, at := range []time.Time{prevFrom, from, to} {
		all = append(all, randomTraces(rnd, e.a, at.Add(-90*time.Second), at.Add(90*time.Second), 120)...)
		all = append(all, newTrace(e.a, at), newTrace(e.a, at.Add(-time.Microsecond)))
	}
	all = append(all, randomTraces(rnd, e.a, prevFrom, to, 300)...)
	e.insert(t, append(all, randomTraces(rnd, e.b, prevFrom, to, 100)...)...)
	in := func(lo, hi time.Time) []*tracing.Trace {
		var out []*tracing.Trace
		for _, tr := range all {
			if !tr.CreatedAt.Before(lo) && tr.CreatedAt.Before(hi) {
				out = append(out, tr)
			}
		}
		return out
	}
	var got analytics.Summary
	e.getJSON(t, e.a.key, "/v1/analytics/summary?from="+from.Format(time.RFC3339Nano)+"&to="+to.Format(time.RFC3339Nano), &got)
	want := analytics.Summary{
		Current:  analytics.Period{From: from, To: to, Metrics: expect(in(from, to))},
		Previous: analytics.Period{From: prevFrom, To: from, Metrics: expect(in(prevFrom, from))},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}

// testSummaryWindow checks window=, which ends now.
func testSummaryWindow(t *testing.T, e *apiEnv) {
	now := time.Now()
	cur := []*tracing.Trace{newTrace(e.a, now.Add(-time.Hour)), newTrace(e.a, now.Add(-2*time.Hour)), newTrace(e.a, now.Add(-23*time.Hour))}
	prev := []*tracing.Trace{newTrace(e.a, now.Add(-30*time.Hour))}
	cur[1].Status, cur[2].CostMicroUSD, prev[0].LatencyUS = 500, nil, 77
	e.insert(t, slices.Concat(cur, prev, []*tracing.Trace{newTrace(e.a, now.Add(-50*time.Hour))})...)
	var got analytics.Summary
	e.getJSON(t, e.a.key, "/v1/analytics/summary?window=24h", &got)
	if diff := cmp.Diff(expect(cur), got.Current.Metrics); diff != "" {
		t.Errorf("current (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(expect(prev), got.Previous.Metrics); diff != "" {
		t.Errorf("previous (-want +got):\n%s", diff)
	}
	if got.Current.To.Sub(got.Current.From) != 24*time.Hour || !got.Previous.To.Equal(got.Current.From) || got.Previous.To.Sub(got.Previous.From) != 24*time.Hour {
		t.Errorf("ranges: %+v", got)
	}
}

// points computes a series the way the API defines it: buckets aligned to the bucket
// length, from the one holding from to the one holding the end, traces in [from, to).
func points(traces []*tracing.Trace, from, to time.Time, bucket time.Duration, keep func(*tracing.Trace) bool) []analytics.Point {
	out := []analytics.Point{}
	for start := from.Truncate(bucket); start.Before(to); start = start.Add(bucket) {
		var in []*tracing.Trace
		for _, t := range traces {
			if !t.CreatedAt.Before(start) && t.CreatedAt.Before(start.Add(bucket)) &&
				!t.CreatedAt.Before(from) && t.CreatedAt.Before(to) && (keep == nil || keep(t)) {
				in = append(in, t)
			}
		}
		m := expect(in)
		if bucket%time.Minute != 0 {
			m = expectExact(in) // buckets off minute boundaries: answered from the traces alone
		}
		out = append(out, analytics.Point{Start: start, Metrics: m})
	}
	return out
}

func testTimeseries(t *testing.T, e *apiEnv) {
	rnd := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 6, 12, 0, 0, 0, 0, time.UTC)
	from, to := t0.Add(30*time.Minute), t0.Add(6*time.Hour+10*time.Minute)
	var mine []*tracing.Trace
	for _, span := range [][2]time.Duration{{0, time.Hour}, {2 * time.Hour, 4 * time.Hour}, {5 * time.Hour, 6*time.Hour + 20*time.Minute}} {
		mine = append(mine, randomTraces(rnd, e.a, t0.Add(span[0]), t0.Add(span[1]), 60)...) // hours 1 and 4 stay empty
	}
	mine = append(mine, newTrace(e.a, to), newTrace(e.a, from), newTrace(e.a, t0.Add(2*time.Hour-time.Microsecond)))
	mine[len(mine)-1].Model = "rare"
	e.insert(t, append(mine, randomTraces(rnd, e.b, t0, to, 50)...)...)

	q := "from=" + from.Format(time.RFC3339) + "&to=" + to.Format(time.RFC3339)
	for _, bucket := range []time.Duration{time.Hour, 25 * time.Minute, 24 * time.Hour, 90 * time.Second, time.Minute} {
		var got analytics.Series
		e.getJSON(t, e.a.key, "/v1/analytics/timeseries?"+q+"&bucket="+bucket.String(), &got)
		want := analytics.Series{From: from, To: to, BucketSeconds: int64(bucket / time.Second), Points: points(mine, from, to, bucket, nil)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("bucket %v (-want +got):\n%s", bucket, diff)
		}
	}

	// Grouped by model: the two busiest models, then the rest as "other".
	counts := map[string]int{}
	for _, tr := range mine {
		if !tr.CreatedAt.Before(from) && tr.CreatedAt.Before(to) {
			counts[tr.Model]++
		}
	}
	models := []string{"gpt-4o", "gpt-4o-mini", "claude-3"}
	slices.SortFunc(models, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	var got analytics.Series
	e.getJSON(t, e.a.key, "/v1/analytics/timeseries?"+q+"&group_by=model&top=2", &got)
	top := models[:2]
	want := analytics.Series{From: from, To: to, BucketSeconds: 3600, Points: points(mine, from, to, time.Hour, nil), GroupBy: "model",
		Groups: []analytics.Group{
			{Value: top[0], Points: points(mine, from, to, time.Hour, func(t *tracing.Trace) bool { return t.Model == top[0] })},
			{Value: top[1], Points: points(mine, from, to, time.Hour, func(t *tracing.Trace) bool { return t.Model == top[1] })},
			{Value: "other", Other: true, Points: points(mine, from, to, time.Hour, func(t *tracing.Trace) bool { return !slices.Contains(top, t.Model) })},
		}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("grouped (-want +got):\n%s", diff)
	}
}

func testValues(t *testing.T, e *apiEnv) {
	base := time.Date(2026, 6, 3, 0, 0, 0, 0, time.UTC)
	mine, others := filterTraces(e, base)
	others[0].Model = "only-theirs"
	e.insert(t, append(mine, others...)...)
	from := base.Add(time.Hour)
	values := func(keep func(*tracing.Trace) bool, field func(*tracing.Trace) string) []analytics.Value {
		counts := map[string]int64{}
		for _, tr := range mine {
			if keep(tr) {
				counts[field(tr)]++
			}
		}
		out := []analytics.Value{}
		for v, n := range counts {
			out = append(out, analytics.Value{Value: v, Requests: n})
		}
		slices.SortFunc(out, func(a, b analytics.Value) int {
			if a.Requests != b.Requests {
				return int(b.Requests - a.Requests)
			}
			return strings.Compare(a.Value, b.Value)
		})
		return out
	}
	all := func(*tracing.Trace) bool { return true }
	tests := []struct {
		name, query string
		want        analytics.ValueList
	}{
		{"model", "field=model", analytics.ValueList{Object: "list", Field: "model", Data: values(all, func(t *tracing.Trace) string { return t.Model })}},
		{"provider", "field=provider", analytics.ValueList{Object: "list", Field: "provider", Data: values(all, func(t *tracing.Trace) string { return t.Provider })}},
		{"api key", "field=api_key_id", analytics.ValueList{Object: "list", Field: "api_key_id", Data: values(all, func(t *tracing.Trace) string { return t.APIKeyID })}},
		{"status", "field=status", analytics.ValueList{Object: "list", Field: "status", Data: values(all, func(t *tracing.Trace) string { return strconv.Itoa(t.Status) })}},
		{"model from", "field=model&from=" + from.Format(time.RFC3339) + "&to=" + base.Add(24*time.Hour).Format(time.RFC3339),
			analytics.ValueList{Object: "list", Field: "model", Data: values(func(t *tracing.Trace) bool { return !t.CreatedAt.Before(from) }, func(t *tracing.Trace) string { return t.Model })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got analytics.ValueList
			e.getJSON(t, e.a.key, "/v1/analytics/values?"+tt.query, &got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// testExport streams more rows than one flush holds, as CSV and JSON lines, with hostile
// cells.
func testExport(t *testing.T, e *apiEnv) {
	base := time.Date(2026, 6, 4, 0, 0, 0, 0, time.UTC)
	var mine []*tracing.Trace
	for i := range 1200 {
		mine = append(mine, newTrace(e.a, base.Add(time.Duration(i)*time.Second)))
	}
	hostile := mine[600]
	hostile.Model, hostile.RequestID, hostile.ErrorType, hostile.Provider = "=1+2", "@SUM(A1)", "-x", "+p"
	hostile.ServedModel = "line\nbreak, \"quoted\" <script>alert(1)</script>"
	hostile.CostMicroUSD = nil
	hostile.FinishReasons = []string{"=cmd|' /c calc'!A0", `a,"b"`}
	mine[601].FinishReasons = nil // no choice finished
	mine[602].FinishReasons = []string{"tool_calls", "length"}
	e.insert(t, append(mine, newTrace(e.b, base))...)
	want := newestFirst(mine, nil)

	if diff := cmp.Diff(want, exportJSONL(t, e, e.a.key, "")); diff != "" {
		t.Errorf("jsonl (-want +got):\n%s", diff)
	}

	status, h, body := e.get(t, e.a.key, "/v1/traces/export?format=csv")
	if status != http.StatusOK || h.Get("Content-Type") != "text/csv; charset=utf-8" || !strings.Contains(h.Get("Content-Disposition"), "traces.csv") {
		t.Fatalf("csv: %d %v", status, h)
	}
	records, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := records[0]
	wantHeader := []string{"id", "created_at", "tenant_id", "api_key_id", "request_id", "model", "served_model",
		"provider", "stream", "status", "error_type", "client_aborted", "prompt_tokens", "completion_tokens",
		"cached_tokens", "reasoning_tokens", "usage_source", "cost_micro_usd", "price_version", "latency_us",
		"ttfb_us", "overhead_us", "response_truncated", "key_version", "fields_cut", "upstream_retries",
		"usage_method", "cache_write_5m_tokens", "cache_write_1h_tokens", "audio_prompt_tokens", "audio_completion_tokens",
		"accepted_prediction_tokens", "rejected_prediction_tokens", "service_tier", "finish_reasons"}
	if diff := cmp.Diff(wantHeader, header); diff != "" {
		t.Fatalf("header (-want +got):\n%s", diff)
	}
	var gotIDs []string
	for _, rec := range records[1:] {
		gotIDs = append(gotIDs, rec[0])
		cell := func(name string) string { return rec[slices.Index(header, name)] }
		if rec[0] == hostile.ID {
			got := map[string]string{"model": cell("model"), "request_id": cell("request_id"), "error_type": cell("error_type"),
				"provider": cell("provider"), "served_model": cell("served_model"), "cost_micro_usd": cell("cost_micro_usd"),
				"finish_reasons": cell("finish_reasons")}
			wantCells := map[string]string{"model": "'=1+2", "request_id": "'@SUM(A1)", "error_type": "'-x", "provider": "'+p",
				"served_model": hostile.ServedModel, "cost_micro_usd": "", "finish_reasons": `["=cmd|' /c calc'!A0","a,\"b\""]`}
			if diff := cmp.Diff(wantCells, got); diff != "" {
				t.Errorf("hostile row (-want +got):\n%s", diff)
			}
		} else if rec[0] == mine[601].ID || rec[0] == mine[602].ID {
			want := map[string]string{mine[601].ID: "[]", mine[602].ID: `["tool_calls","length"]`}[rec[0]]
			if got := cell("finish_reasons"); got != want {
				t.Errorf("finish_reasons = %q, want %q", got, want)
			}
		} else if cell("model") != "gpt-4o" || cell("cost_micro_usd") != "1500" || cell("created_at") == "" || cell("finish_reasons") != `["stop"]` {
			t.Errorf("row %v", rec)
		}
	}
	if diff := cmp.Diff(ids(want), gotIDs); diff != "" {
		t.Errorf("csv ids (-want +got):\n%s", diff)
	}
}

// testTenantIsolation: another tenant's key sees none of this tenant's traces on any
// endpoint, while this tenant's key does.
func testTenantIsolation(t *testing.T, e *apiEnv) {
	base := time.Date(2026, 6, 5, 0, 0, 0, 0, time.UTC)
	mine, _ := filterTraces(e, base)
	e.insert(t, mine...)
	rng := "from=" + base.Format(time.RFC3339) + "&to=" + base.Add(3*time.Hour).Format(time.RFC3339)

	if got := e.listAll(t, e.a.key, ""); len(got) != len(mine) {
		t.Fatalf("the owner lists %d traces, want %d", len(got), len(mine))
	}
	for _, q := range []string{"", "model=gpt-4o", "api_key_id=" + e.a.keyID, rng} {
		if got := e.listAll(t, e.b.key, q); len(got) != 0 {
			t.Errorf("list %q: another tenant sees %d traces", q, len(got))
		}
		if got := exportJSONL(t, e, e.b.key, q); len(got) != 0 {
			t.Errorf("export %q: another tenant sees %d traces", q, len(got))
		}
	}
	_, _, csvBody := e.get(t, e.b.key, "/v1/traces/export?format=csv")
	if lines := strings.Count(string(csvBody), "\n"); lines != 1 {
		t.Errorf("csv export of another tenant has %d lines, want the header only: %s", lines, csvBody)
	}
	for _, f := range []string{"model", "provider", "api_key_id", "status"} {
		var v analytics.ValueList
		e.getJSON(t, e.b.key, "/v1/analytics/values?field="+f, &v)
		if len(v.Data) != 0 {
			t.Errorf("values of %s: another tenant sees %v", f, v.Data)
		}
	}
	var s analytics.Summary
	e.getJSON(t, e.b.key, "/v1/analytics/summary?"+rng, &s)
	if diff := cmp.Diff(analytics.Metrics{}, s.Current.Metrics); diff != "" {
		t.Errorf("summary of another tenant (-want +got):\n%s", diff)
	}
	var ts analytics.Series
	e.getJSON(t, e.b.key, "/v1/analytics/timeseries?group_by=model&"+rng, &ts)
	for _, p := range ts.Points {
		if p.Requests != 0 {
			t.Errorf("timeseries of another tenant: %+v", p)
		}
	}
	if len(ts.Points) != 3 || len(ts.Groups) != 0 {
		t.Errorf("timeseries of another tenant: %d points, groups %+v", len(ts.Points), ts.Groups)
	}
	status, _, body := e.get(t, e.b.key, "/v1/traces/"+mine[0].ID)
	missingStatus, _, missing := e.get(t, e.b.key, "/v1/traces/"+uuid.Must(uuid.NewV7()).String())
	if status != http.StatusNotFound || status != missingStatus || !bytes.Equal(body, missing) {
		t.Errorf("another tenant's trace: %d %s; a missing one: %d %s", status, body, missingStatus, missing)
	}
	if status, _, _ := e.get(t, e.a.key, "/v1/traces/"+mine[0].ID); status != http.StatusOK {
		t.Errorf("the owner's own trace: %d", status)
	}
}

func testBadParameters(t *testing.T, e *apiEnv) {
	tests := []struct {
		name, path, param string
	}{
		{"bad cursor", "/v1/traces?cursor=abc", "cursor"},
		{"cursor of another shape", "/v1/traces?cursor=" + strings.Repeat("A", 34), "cursor"},
		{"unknown filter", "/v1/traces?color=red", "color"},
		{"unknown filter on export", "/v1/traces/export?format=csv&modle=x", "modle"},
		{"unknown parameter on summary", "/v1/analytics/summary?model=x", "model"},
		{"unknown parameter on one trace", "/v1/traces/" + uuid.Must(uuid.NewV7()).String() + "?x=1", "x"},
		{"repeated filter", "/v1/traces?model=a&model=b", "model"},
		{"limit zero", "/v1/traces?limit=0", "limit"},
		{"limit over 200", "/v1/traces?limit=201", "limit"},
		{"limit not a number", "/v1/traces?limit=ten", "limit"},
		{"status word", "/v1/traces?status=fine", "status"},
		{"status out of range", "/v1/traces?status=99", "status"},
		{"stream", "/v1/traces?stream=maybe", "stream"},
		{"from not a time", "/v1/traces?from=yesterday", "from"},
		{"to not RFC 3339", "/v1/traces?to=2026-01-02", "to"},
		{"to before from", "/v1/traces?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
		{"to before from on export", "/v1/traces/export?format=jsonl&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
		{"to before from on summary", "/v1/analytics/summary?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
		{"window over 400 days", "/v1/analytics/summary?window=401d", "window"},
		{"window in hours over 400 days", "/v1/analytics/timeseries?window=9601h&bucket=24h", "window"},
		{"window not a duration", "/v1/analytics/summary?window=a-while", "window"},
		{"negative window", "/v1/analytics/summary?window=-1h", "window"},
		{"window and from", "/v1/analytics/summary?window=1h&from=2026-01-01T00:00:00Z", "window"},
		{"range over 400 days", "/v1/analytics/summary?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{"too many buckets", "/v1/analytics/timeseries?window=7d&bucket=1m", "bucket"},
		{"bucket not whole seconds", "/v1/analytics/timeseries?bucket=1500ms", "bucket"},
		{"bucket not a duration", "/v1/analytics/timeseries?bucket=hourly", "bucket"},
		{"group_by", "/v1/analytics/timeseries?group_by=color", "group_by"},
		{"top", "/v1/analytics/timeseries?group_by=model&top=0", "top"},
		{"values field missing", "/v1/analytics/values", "field"},
		{"values field unknown", "/v1/analytics/values?field=request_id", "field"},
		{"export format missing", "/v1/traces/export", "format"},
		{"export format unknown", "/v1/traces/export?format=xml", "format"},
		{"malformed query", "/v1/traces?model=%zz", "query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := e.get(t, e.a.key, tt.path)
			var got struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil || status != http.StatusBadRequest {
				t.Fatalf("%d %s", status, body)
			}
			if got.Error.Param == nil || *got.Error.Param != tt.param || got.Error.Type != "invalid_request_error" ||
				!strings.Contains(got.Error.Message, tt.param) {
				t.Errorf("error %s, want param %q", body, tt.param)
			}
		})
	}
}

func testAuthentication(t *testing.T, e *apiEnv) {
	for _, p := range []string{"/v1/traces", "/v1/traces/" + uuid.Must(uuid.NewV7()).String(), "/v1/traces/export?format=csv",
		"/v1/analytics/summary", "/v1/analytics/timeseries", "/v1/analytics/values?field=model"} {
		for _, key := range []string{"", "loom_not-a-key-at-all-000000"} {
			if status, _, body := e.get(t, key, p); status != http.StatusUnauthorized || !strings.Contains(string(body), `"invalid_request_error"`) {
				t.Errorf("GET %s with key %q: %d %s", p, key, status, body)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/v1/traces/"+uuid.Must(uuid.NewV7()).String(), nil)
	req.Header.Set("Authorization", "Bearer "+e.a.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Errorf("DELETE a trace: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestSummaryWithoutRollupStep: a sink that does not run the rollup step (an embedder who
// left it out) still gets right summaries, answered from the traces with exact
// percentiles, rather than empty ones.
func TestSummaryWithoutRollupStep(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			e := newAPIEnvRollups(t, be, false)
			to := time.Date(2026, 6, 10, 0, 0, 0, 0, time.UTC)
			from := to.Add(-24 * time.Hour)
			cur := randomTraces(rand.New(rand.NewPCG(3, 4)), e.a, from, to, 200)
			e.insert(t, cur...)
			var got analytics.Summary
			e.getJSON(t, e.a.key, "/v1/analytics/summary?from="+from.Format(time.RFC3339)+"&to="+to.Format(time.RFC3339), &got)
			if diff := cmp.Diff(expectExact(cur), got.Current.Metrics); diff != "" {
				t.Errorf("summary without rollups (-want +got):\n%s", diff)
			}
		})
	}
}
