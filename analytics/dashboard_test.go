package analytics_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

var screenshots = flag.String("screenshots", "testdata/screenshots", "where the browser test saves its screenshots")

func TestDashboardServing(t *testing.T) {
	srv := httptest.NewServer(analytics.Dashboard())
	defer srv.Close()
	tests := []struct {
		name, method, path string
		status             int
		contentType        string
	}{
		{"index", "GET", "/", 200, "text/html; charset=utf-8"},
		{"index by name", "GET", "/index.html", 200, "text/html; charset=utf-8"},
		{"module", "GET", "/app.js", 200, "text/javascript; charset=utf-8"},
		{"stylesheet", "GET", "/style.css", 200, "text/css; charset=utf-8"},
		{"vendored uPlot", "GET", "/vendor/uPlot.esm.js", 200, "text/javascript; charset=utf-8"},
		{"head", "HEAD", "/", 200, "text/html; charset=utf-8"},
		{"the vendoring script is not served", "GET", "/vendor.sh", 404, "text/plain; charset=utf-8"},
		{"directory", "GET", "/vendor/", 404, "text/plain; charset=utf-8"},
		{"dot dot", "GET", "/vendor/../app.js", 404, "text/plain; charset=utf-8"},
		{"missing", "GET", "/nope.js", 404, "text/plain; charset=utf-8"},
		{"post", "POST", "/", 405, "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = tt.path // keep ".." as sent
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := map[string]string{
				"status":       fmt.Sprint(tt.status),
				"Content-Type": tt.contentType,
				"CSP": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
					"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
				"X-Content-Type-Options": "nosniff",
			}
			got := map[string]string{
				"status":                 fmt.Sprint(resp.StatusCode),
				"Content-Type":           resp.Header.Get("Content-Type"),
				"CSP":                    resp.Header.Get("Content-Security-Policy"),
				"X-Content-Type-Options": resp.Header.Get("X-Content-Type-Options"),
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", tt.method, tt.path, diff)
			}
		})
	}
}

// The hostile strings the browser test sends through the gateway: markup and script that
// must show as typed and never run.
const (
	xssModel   = `<img src=x onerror=window.__xss=1>`
	xssMessage = `hi <img src=x onerror="window.__xss=2"></script><script>window.__xss=3</script> & "quotes"`
)

// dashEnv is the standalone server's layout: the gateway at /v1/, the dashboard at /.
type dashEnv struct {
	srv *httptest.Server
	gw  *loom.Gateway
	key string
}

func newDashEnv(t *testing.T) *dashEnv {
	t.Helper()
	ctx := context.Background()
	store, sink, reads, _ := backends[1].open(t, true) // SQLite: the standalone server's default
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := loom.New(loom.Config{
		Store:   store,
		Keyring: keyring,
		Routes: []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{ChunkDelay: 3 * time.Millisecond}),
			Models: []string{"mock-1", "mock-2", xssModel}}},
		Tracing:   tracing.PipelineConfig{Sinks: []tracing.Sink{sink}},
		Analytics: reads,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.Handle("/", analytics.Dashboard())
	e := &dashEnv{srv: httptest.NewServer(mux), gw: gw}
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	ten, err := gw.Admin().CreateTenant(ctx, "dashboard")
	if err != nil {
		t.Fatal(err)
	}
	if e.key, _, err = gw.Admin().CreateKey(ctx, ten.ID, "dashboard"); err != nil {
		t.Fatal(err)
	}
	return e
}

// traffic sends requests through the gateway with the OpenAI SDK and returns the traces
// they left, newest first, once all are written.
func (e *dashEnv) traffic(t *testing.T) (rows []analytics.Trace, toolID, xssID string) {
	t.Helper()
	ctx := context.Background()
	client := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(e.key), option.WithMaxRetries(0))
	var resp *http.Response
	send := func(model string, stream bool, msgs ...openai.ChatCompletionMessageParamUnion) string {
		p := openai.ChatCompletionNewParams{Model: model, Messages: msgs}
		if !stream {
			if _, err := client.Chat.Completions.New(ctx, p, option.WithResponseInto(&resp)); err != nil {
				t.Fatal(err)
			}
			return resp.Header.Get("X-Request-Id")
		}
		s := client.Chat.Completions.NewStreaming(ctx, p, option.WithResponseInto(&resp))
		for s.Next() {
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return resp.Header.Get("X-Request-Id")
	}
	for i := range 55 {
		send("mock-1", false, openai.UserMessage(fmt.Sprintf("question %d", i)))
	}
	for i := range 4 {
		send("mock-2", true, openai.UserMessage(fmt.Sprintf("streamed question %d", i)))
	}
	toolID = send("mock-2", true,
		openai.SystemMessage("You are the weather desk."),
		openai.UserMessage("Weather in Paris?"),
		openai.ChatCompletionMessageParamUnion{OfAssistant: &openai.ChatCompletionAssistantMessageParam{
			ToolCalls: []openai.ChatCompletionMessageToolCallUnionParam{{OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
				ID: "call_1", Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: "get_weather", Arguments: `{"city":"Paris"}`},
			}}},
		}},
		openai.ToolMessage(`{"temp_c":21}`, "call_1"),
		openai.UserMessage("Thanks, summarise."))
	xssID = send(xssModel, false, openai.UserMessage(xssMessage))

	want := 55 + 4 + 1 + 1
	deadline := time.Now().Add(10 * time.Second)
	api := &apiEnv{srv: e.srv}
	for len(rows) < want && time.Now().Before(deadline) {
		if err := e.gw.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
		rows = api.listAll(t, e.key, "")
	}
	if len(rows) != want {
		t.Fatalf("%d traces written, want %d", len(rows), want)
	}
	return rows, toolID, xssID
}

// browser is a headless Chromium driven over CDP, recording what the page does that it
// must not: console errors and warnings (CSP reports among them), exceptions, dialogs,
// requests to another origin.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	problems []string
	dir      string
}

func newBrowser(t *testing.T, origin string) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the dashboard tests need Debian's chromium (apt-get install chromium; .ci/run does): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	for _, f := range []string{"headless", "no-sandbox", "disable-gpu", "disable-background-networking",
		"disable-component-update", "disable-quic", "no-first-run", "disable-sync"} {
		opts = append(opts, chromedp.Flag(f, true))
	}
	b := &browser{dir: *screenshots}
	dialogs := make(chan struct{}, 16)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			b.problem("dialog: %s", ev.Message)
			select {
			case dialogs <- struct{}{}:
			default:
			}
		case *network.EventRequestWillBeSent:
			u := ev.Request.URL
			if !strings.HasPrefix(u, origin+"/") && !strings.HasPrefix(u, "data:") && !strings.HasPrefix(u, "blob:"+origin+"/") {
				b.problem("request to another origin: %s", u)
			}
		}
	}))
	b.ctx = ctx
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		cancelCtx()
		cancelAlloc()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	messages := chromedp.Console(ctx)
	go func() { // owned by the test: ends when ctx is cancelled
		defer wg.Done()
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				b.problem("console %s", m)
			}
		}
	}()
	go func() { // a dialog would block the page: dismiss it (it is already reported)
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-dialogs:
				chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}
		}
	}()
	t.Cleanup(func() { cancelCtx(); cancelAlloc(); wg.Wait() })
	return b
}

func (b *browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// run runs the actions, each step bounded so that a page that never gets there fails.
func (b *browser) run(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// eval runs a JavaScript expression in the page and returns its value.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitFor polls expr until it is true (the page is asynchronous); a page that never gets
// there fails the test.
func (b *browser) waitFor(t *testing.T, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(p)
	t.Logf("screenshot %s", abs)
}

func TestDashboardBrowser(t *testing.T) {
	e := newDashEnv(t)
	rows, toolID, xssID := e.traffic(t)
	b := newBrowser(t, e.srv.URL)
	var (
		s     string
		texts []string
		ran   bool
	)

	// Sign in.
	b.run(t, chromedp.Navigate(e.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#signin-form")))
	b.screenshot(t, "signin")
	b.run(t, chromedp.SendKeys(chromedp.CSS("#key"), "loom_not-a-key"), chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)))
	b.waitFor(t, "refusal", `document.getElementById('signin-error').textContent.includes('refused')`)
	eval[bool](t, b, `(document.getElementById('key').value = '') === ''`)
	b.run(t, chromedp.SendKeys(chromedp.CSS("#key"), e.key), chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)))
	b.waitFor(t, "cards and charts", `document.querySelectorAll('#cards .card').length === 8 && document.querySelectorAll('#charts .uplot').length === 5`)
	b.waitFor(t, "first page", `document.querySelectorAll('#traces tbody tr').length > 0`)

	// The cards show the traffic sent above.
	var tokensIn, tokensOut int64
	for _, r := range rows {
		tokensIn += r.PromptTokens
		tokensOut += r.CompletionTokens
	}
	cards := eval[map[string]string](t, b, `Object.fromEntries([...document.querySelectorAll('#cards .card')].map(c => [c.dataset.card, c.querySelector('.card-value').textContent]))`)
	wantCards := map[string]string{"Requests": fmt.Sprint(len(rows)), "Tokens in": thousands(tokensIn), "Tokens out": thousands(tokensOut)}
	gotCards := map[string]string{"Requests": cards["Requests"], "Tokens in": cards["Tokens in"], "Tokens out": cards["Tokens out"]}
	if diff := cmp.Diff(wantCards, gotCards); diff != "" {
		t.Errorf("cards (-want +got):\n%s", diff)
	}
	s = eval[string](t, b, `document.querySelector('[data-card="Cost"] .card-sub').textContent`)
	if !strings.HasSuffix(s, " unpriced") {
		t.Errorf("cost card sub line %q, want the unpriced count", s)
	}

	// Hovering the requests chart at its right edge shows the newest bucket's figures.
	box := eval[struct{ X, Y, W, H float64 }](t, b, `(() => { const r = document.querySelector('[data-chart="Requests"] .u-over').getBoundingClientRect(); return {X: r.x, Y: r.y, W: r.width, H: r.height}; })()`)
	bucketStart := time.Now().UTC().Truncate(15 * time.Minute) // 24h: 15-minute buckets
	b.run(t, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, box.X+box.W-1, box.Y+box.H/2))
	b.waitFor(t, "legend", `document.querySelector('[data-chart="Requests"] .u-series:nth-child(2) .u-value').textContent !== '--'`)
	s = eval[string](t, b, `document.querySelector('[data-chart="Requests"] .u-series:nth-child(2) .u-value').textContent`)
	inBucket := 0
	for _, r := range rows {
		if r.Status < 400 && !r.CreatedAt.Before(bucketStart) {
			inBucket++
		}
	}
	if s != fmt.Sprint(inBucket) {
		t.Errorf("hovered ok requests %q, want %d", s, inBucket)
	}
	b.screenshot(t, "overview")

	// Every field of a trace row is a column (the bodies are not in rows).
	var raw struct{ Data []map[string]any }
	(&apiEnv{srv: e.srv}).getJSON(t, e.key, "/v1/traces?limit=1", &raw)
	var fields []string
	for k := range raw.Data[0] {
		fields = append(fields, k)
	}
	texts = eval[[]string](t, b, `[...document.querySelectorAll('#traces thead th')].map(th => th.dataset.field)`)
	if diff := cmp.Diff(fields, texts, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("columns against the fields of a row (-want +got):\n%s", diff)
	}

	// The list shows the first page; scrolling to its end loads the second by cursor.
	n := eval[int](t, b, `document.querySelectorAll('#traces tbody tr').length`)
	if n != 50 {
		t.Errorf("first page: %d rows, want 50", n)
	}
	b.run(t, chromedp.ScrollIntoView(chromedp.CSS("#list-end")))
	b.waitFor(t, "second page", fmt.Sprintf(`document.querySelectorAll('#traces tbody tr').length === %d`, len(rows)))
	texts = eval[[]string](t, b, `[...document.querySelectorAll('#traces tbody tr')].map(r => r.dataset.id)`)
	if diff := cmp.Diff(ids(rows), texts); diff != "" {
		t.Errorf("listed rows (-want +got):\n%s", diff)
	}
	b.screenshot(t, "list-scrolled")

	// Changing the range changes the URL; the range survives a reload.
	b.run(t, chromedp.Click(chromedp.CSS(`#range [data-range="7d"]`)))
	b.waitFor(t, "7d", `location.search.includes('range=7d')`)
	b.run(t, chromedp.Click(chromedp.CSS(`#range [data-range="custom"]`)))
	b.waitFor(t, "custom", `location.search.includes('range=custom') && location.search.includes('from=') && !document.getElementById('custom').hidden`)
	b.run(t, chromedp.NavigateBack())
	b.waitFor(t, "7d again", `location.search.includes('range=7d')`)
	b.run(t, chromedp.Reload())
	b.waitFor(t, "7d after reload", `document.querySelector('#range [data-range="7d"]').getAttribute('aria-pressed') === 'true' && document.querySelectorAll('#charts .uplot').length === 5`)

	// The model filter offers the values the server has, and filters the list.
	b.waitFor(t, "model values", `document.querySelectorAll('select[name=model] option').length === 4`)
	texts = eval[[]string](t, b, `[...document.querySelectorAll('select[name=model] option')].map(o => o.textContent)`)
	if diff := cmp.Diff([]string{"any", "mock-1", "mock-2", xssModel}, texts); diff != "" {
		t.Errorf("model filter options (-want +got):\n%s", diff)
	}
	b.run(t, chromedp.Focus(chromedp.CSS(`select[name=model]`)))
	eval[bool](t, b, `(() => { const s = document.querySelector('select[name=model]'); s.value = 'mock-2'; s.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`)
	b.waitFor(t, "filtered", `location.search.includes('model=mock-2') && document.querySelectorAll('#traces tbody tr').length === 5`)
	texts = eval[[]string](t, b, `[...new Set([...document.querySelectorAll('#traces tbody tr td:nth-child(3)')].map(td => td.textContent))]`)
	if diff := cmp.Diff([]string{"mock-2"}, texts); diff != "" {
		t.Errorf("models in the filtered list (-want +got):\n%s", diff)
	}
	b.screenshot(t, "list-filtered")

	// Export the filtered set (fetched with the key).
	b.run(t, chromedp.Click(chromedp.CSS(`[data-export="jsonl"]`)))
	b.waitFor(t, "export", `document.getElementById('status').textContent.startsWith('Exported')`)

	// A trace: the conversation and the timing bar to scale.
	b.run(t, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] a`, toolID))))
	b.waitFor(t, "detail", `document.querySelectorAll('#detail .conversation .msg').length > 0`)
	if !strings.Contains(locationOf(t, b), "trace="+toolID) {
		t.Errorf("the detail's URL does not name the trace")
	}
	texts = eval[[]string](t, b, `[...document.querySelectorAll('#detail .conversation .msg > .role')].map(r => r.textContent.split(' · ')[0])`)
	if diff := cmp.Diff([]string{"system", "user", "assistant", "tool", "user", "assistant"}, texts); diff != "" {
		t.Errorf("conversation roles (-want +got):\n%s", diff)
	}
	s = eval[string](t, b, `document.querySelector('#detail .tool-call').textContent`)
	if !strings.Contains(s, "get_weather") || !strings.Contains(s, `"city": "Paris"`) {
		t.Errorf("tool call shows %q", s)
	}
	segs := eval[[]struct{ US, W float64 }](t, b, `[...document.querySelectorAll('#detail .timing-bar rect')].map(r => ({US: +r.dataset.us, W: +r.getAttribute('width')}))`)
	var tool analytics.Trace
	for _, r := range rows {
		if r.ID == toolID {
			tool = r
		}
	}
	if len(segs) != 3 || segs[0].US != float64(tool.OverheadUS) || segs[0].US+segs[1].US+segs[2].US != float64(tool.LatencyUS) {
		t.Errorf("timing segments %+v for overhead %d, latency %d", segs, tool.OverheadUS, tool.LatencyUS)
	}
	for _, sg := range segs {
		if want := sg.US / float64(tool.LatencyUS) * 1000; sg.W < want-0.01 || sg.W > want+0.01 {
			t.Errorf("segment of %v µs is %v wide, want %.2f of 1000", sg.US, sg.W, want)
		}
	}
	b.screenshot(t, "detail")

	// Markup and script sent by a client show as text and never run, in the list and the detail.
	b.run(t, chromedp.Navigate(e.srv.URL+"/?range=24h"))
	b.waitFor(t, "list", fmt.Sprintf(`!!document.querySelector('tr[data-id="%s"]')`, xssID))
	s = eval[string](t, b, fmt.Sprintf(`document.querySelector('tr[data-id="%s"] td:nth-child(3)').textContent`, xssID))
	if s != xssModel {
		t.Errorf("model cell %q, want %q", s, xssModel)
	}
	// By keyboard: focus the trace's link, press Enter.
	b.run(t, chromedp.Focus(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] a`, xssID))), chromedp.KeyEvent("\r"))
	b.waitFor(t, "xss detail", `document.querySelectorAll('#detail .conversation .msg').length === 2`)
	s = eval[string](t, b, `document.querySelector('#detail .msg-user .content').textContent`)
	if s != xssMessage {
		t.Errorf("user message %q, want %q", s, xssMessage)
	}
	s = eval[string](t, b, `document.querySelector('#detail h1 .mono').textContent`)
	if s != xssModel {
		t.Errorf("detail title %q, want %q", s, xssModel)
	}
	ran = eval[bool](t, b, `window.__xss !== undefined || document.querySelectorAll('img, script:not([src])').length > 0`)
	if ran {
		t.Error("markup from a trace became elements or ran")
	}
	b.screenshot(t, "detail-hostile")

	// Phone width: nothing wider than the screen but the trace table, which scrolls.
	b.run(t, chromedp.EmulateViewport(390, 844), chromedp.Navigate(e.srv.URL+"/?range=24h"))
	b.waitFor(t, "phone", `document.querySelectorAll('#charts .uplot').length === 5 && document.querySelectorAll('#traces tbody tr').length > 0`)
	ran = eval[bool](t, b, `document.documentElement.scrollWidth <= window.innerWidth`)
	if !ran {
		t.Error("the overview is wider than a phone screen")
	}
	b.screenshot(t, "overview-phone")
	b.run(t, chromedp.EmulateViewport(1280, 900))

	// Sign out: the key and the figures are gone.
	b.run(t, chromedp.Click(chromedp.CSS("#signout")))
	b.waitFor(t, "signed out", `!document.getElementById('signin').hidden`)
	ran = eval[bool](t, b, `sessionStorage.getItem('loom.key') === null && document.querySelectorAll('#traces tbody tr, #cards .card').length === 0`)
	if !ran {
		t.Error("sign-out left the key or the figures")
	}
	b.screenshot(t, "signed-out")

	b.mu.Lock()
	defer b.mu.Unlock()
	// The refused key of the first sign-in logs one failed request (401): expected.
	var problems []string
	for _, p := range b.problems {
		if !strings.Contains(p, "status of 401") {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(problems, "\n"))
	}
}

func locationOf(t *testing.T, b *browser) string {
	s, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// thousands formats n as the dashboard does (en-US grouping).
func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
