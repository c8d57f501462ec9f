package loom_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// rawUpstream is an OpenAI-compatible upstream on a raw TCP (or TLS) listener that writes
// exact bytes, including the ones a well-behaved server never would. Every answer carries
// the marker of the request it answers (the first message's content), so a test can tell
// whose answer a client got. act chooses, per request, what the connection does.
type rawUpstream struct {
	ln   net.Listener
	tls  *tls.Config // client side, when serving TLS
	act  func(marker string) action
	mu   sync.Mutex
	seen map[string]int // marker → times received
	open map[net.Conn]bool
	wg   sync.WaitGroup
}

// action is what the upstream writes for one request; close ends the connection after.
type action struct {
	bytes  string
	close  bool
	closed chan struct{} // closed once the connection is (with close)
}

func newRawUpstream(t *testing.T, useTLS bool, act func(marker string) action) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, act: act, seen: map[string]int{}, open: map[net.Conn]bool{}}
	if useTLS {
		ts := httptest.NewUnstartedServer(nil)
		ts.StartTLS() // only for its certificate and a client configuration trusting it
		u.tls = ts.Client().Transport.(*http.Transport).TLSClientConfig
		u.ln = tls.NewListener(ln, ts.TLS.Clone())
		ts.Close()
	}
	go func() {
		for {
			c, err := u.ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.open[c] = true
			u.mu.Unlock()
			u.wg.Add(1)
			go u.serve(c)
		}
	}()
	t.Cleanup(func() {
		u.ln.Close()
		u.mu.Lock()
		for c := range u.open {
			c.Close() // connections the gateway still keeps idle
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer u.wg.Done()
	defer func() {
		c.Close()
		u.mu.Lock()
		delete(u.open, c)
		u.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		var body struct {
			Stream   bool `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		b, _ := io.ReadAll(req.Body)
		json.Unmarshal(b, &body)
		marker := ""
		if len(body.Messages) > 0 {
			marker = body.Messages[0].Content
		}
		u.mu.Lock()
		u.seen[marker]++
		u.mu.Unlock()
		a := u.act(marker)
		io.WriteString(c, a.bytes)
		if a.close {
			c.Close()
			if a.closed != nil {
				close(a.closed)
			}
			return
		}
	}
}

func (u *rawUpstream) times(marker string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[marker]
}

// answer is a complete 200 response whose completion says marker.
func answer(marker string) string {
	body := fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`, marker)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// streamAnswer is a complete chunked SSE response whose content is marker.
func streamAnswer(marker string) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	for _, ev := range []string{
		fmt.Sprintf(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`+"\n\n", marker),
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}` + "\n\n",
		"data: [DONE]\n\n",
	} {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(ev), ev)
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// sharedRoute is a gateway with two tenants whose requests share one upstream route (and
// so its pooled connections).
type sharedRoute struct {
	*env
	keyB   string
	tenant map[string]string // key → tenant id
}

func newSharedRoute(t *testing.T, u *rawUpstream, modify ...func(*loom.Config)) *sharedRoute {
	t.Helper()
	tr := &provider.Transport{TLSConfig: u.tls}
	scheme := "http"
	if u.tls != nil {
		scheme = "https"
	}
	route := loom.Route{Name: "openai", Models: []string{"gpt-4o-mini"}, Provider: provider.NewOpenAI(provider.OpenAIConfig{
		BaseURL: scheme + "://" + u.ln.Addr().String() + "/v1", APIKey: "sk-operator", Client: &http.Client{Transport: tr}})}
	e := newEnv(t, []loom.Route{route}, modify...)
	ctx := context.Background()
	tb, err := e.gw.Admin().CreateTenant(ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	keyB, _, err := e.gw.Admin().CreateKey(ctx, tb.ID, "b")
	if err != nil {
		t.Fatal(err)
	}
	return &sharedRoute{env: e, keyB: keyB, tenant: map[string]string{e.key: e.tenantID, keyB: tb.ID}}
}

// ask sends one chat request saying marker and returns the status and what the client
// received as the answer's content (for a stream, the content deltas joined).
func (s *sharedRoute) ask(t *testing.T, client *http.Client, key, marker string, stream bool) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, marker)
	req, _ := http.NewRequest(http.MethodPost, s.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s: %v", marker, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(b)
	}
	if !stream {
		var c struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if json.Unmarshal(b, &c) != nil || len(c.Choices) == 0 {
			return resp.StatusCode, string(b)
		}
		return resp.StatusCode, c.Choices[0].Message.Content
	}
	var content strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal([]byte(data), &c) != nil || c.Error != nil {
			return http.StatusBadGateway, string(b)
		}
		for _, ch := range c.Choices {
			content.WriteString(ch.Delta.Content)
		}
	}
	return resp.StatusCode, content.String()
}

// TestTransportMisbehavingUpstream sends, for each way an upstream or a middlebox can
// misbehave on a keep-alive connection, one request of tenant A that meets it and then
// one of tenant B on the same route: B always gets its own answer, never A's or a stale
// one, and A gets its own answer or an error, never B's.
func TestTransportMisbehavingUpstream(t *testing.T) {
	otherHost := newFakeUpstream(t, http.StatusOK, []byte(`{"stolen":true}`))
	var closedIdle chan struct{}
	cases := []struct {
		name string
		// bad is what the upstream does with A's request.
		bad func(marker string) action
		// wantA is A's status (its content is its own marker when 200).
		wantA int
		// before runs between A and B.
		before func(t *testing.T)
	}{
		{name: "103 early hints before the answer", wantA: 200, bad: func(m string) action {
			return action{bytes: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + answer(m)}
		}},
		{name: "100 continue before the answer", wantA: 200, bad: func(m string) action {
			return action{bytes: "HTTP/1.1 100 Continue\r\n\r\n" + answer(m)}
		}},
		{name: "bytes past Content-Length", wantA: 200, bad: func(m string) action {
			return action{bytes: answer(m) + answer("stale:" + m)[:40]}
		}},
		{name: "duplicated response", wantA: 200, bad: func(m string) action {
			return action{bytes: answer(m) + answer("stale:"+m)}
		}},
		{name: "204 with a body", wantA: 204, bad: func(m string) action {
			return action{bytes: "HTTP/1.1 204 No Content\r\n\r\n" + answer("stale:"+m)}
		}},
		{name: "closed after reading the request", wantA: 502, bad: func(m string) action {
			return action{close: true}
		}},
		{name: "closed while idle", wantA: 200, bad: func(m string) action {
			closedIdle = make(chan struct{})
			return action{bytes: answer(m), close: true, closed: closedIdle}
		}, before: func(t *testing.T) { <-closedIdle }},
		{name: "redirect to another host", wantA: 502, bad: func(m string) action {
			return action{bytes: "HTTP/1.1 307 Temporary Redirect\r\nLocation: " + otherHost.URL + "/v1/chat/completions\r\nContent-Length: 0\r\n\r\n"}
		}},
		{name: "oversized response header", wantA: 502, bad: func(m string) action {
			return action{bytes: "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 2<<20) + "\r\nContent-Length: 2\r\n\r\n{}"}
		}},
		{name: "too many interim responses", wantA: 502, bad: func(m string) action {
			return action{bytes: strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + answer(m)}
		}},
	}
	for _, useTLS := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/tls=%v", tc.name, useTLS), func(t *testing.T) {
				u := newRawUpstream(t, useTLS, func(m string) action {
					if strings.HasPrefix(m, "A:") {
						return tc.bad(m)
					}
					return action{bytes: answer(m)}
				})
				s := newSharedRoute(t, u)
				client := &http.Client{}
				// A warm-up by B puts a connection in the pool, so A's exchange runs on a
				// reused one, as under load.
				if st, got := s.ask(t, client, s.keyB, "B:warm", false); st != 200 || got != "B:warm" {
					t.Fatalf("warm-up: %d %q", st, got)
				}
				stA, gotA := s.ask(t, client, s.key, "A:1", false)
				if stA != tc.wantA || (stA == 200 && gotA != "A:1") {
					t.Errorf("A got %d %q, want %d with its own answer", stA, gotA, tc.wantA)
				}
				if strings.Contains(gotA, "B:") {
					t.Errorf("A received B's answer: %q", gotA)
				}
				if tc.before != nil {
					tc.before(t)
				}
				for i := range 3 {
					m := fmt.Sprintf("B:%d", i)
					if st, got := s.ask(t, client, s.keyB, m, false); st != 200 || got != m {
						t.Errorf("B request %d got %d %q, want 200 %q", i, st, got, m)
					}
				}
				if n := u.times("A:1"); n != 1 {
					t.Errorf("the upstream received A's request %d times, want exactly once", n)
				}
				otherHost.mu.Lock()
				stolen := len(otherHost.calls)
				otherHost.mu.Unlock()
				if stolen != 0 {
					t.Errorf("a redirect reached another host %d times", stolen)
				}
				// The traces say what each tenant got.
				traces := s.traces(t, 5)
				for _, tr := range traces {
					if tr.Status >= 100 && tr.Status < 200 {
						t.Errorf("trace %s recorded the interim status %d", tr.ID, tr.Status)
					}
				}
			})
		}
	}
}

// TestTransportStress sends many concurrent requests, streamed and not, from two tenants
// through one route whose upstream misbehaves at random in every way above: no client
// ever receives an answer that is not its own.
func TestTransportStress(t *testing.T) {
	const n, workers = 600, 12
	u := newRawUpstream(t, false, func(m string) action {
		r := rand.New(rand.NewPCG(uint64(len(m)), uint64(hash(m))))
		ok := answer(m)
		if strings.HasSuffix(m, ":s") {
			ok = streamAnswer(m)
		}
		switch r.IntN(9) {
		case 0:
			return action{bytes: "HTTP/1.1 103 Early Hints\r\n\r\n" + ok}
		case 1:
			return action{bytes: ok + answer("stale:"+m)}
		case 2:
			return action{bytes: ok + "garbage"}
		case 3:
			return action{bytes: "HTTP/1.1 204 No Content\r\n\r\n" + answer("stale:"+m)}
		case 4:
			return action{close: true}
		case 5:
			return action{bytes: ok, close: true}
		case 6:
			return action{bytes: "HTTP/1.1 100 Continue\r\n\r\n" + ok + streamAnswer("stale:"+m)}
		}
		return action{bytes: ok}
	})
	s := newSharedRoute(t, u)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var next, answered, crossed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				key, who := s.key, "A"
				if i%2 == 0 {
					key, who = s.keyB, "B"
				}
				stream := i%3 == 0
				m := fmt.Sprintf("%s:%d:n", who, i)
				if stream {
					m = fmt.Sprintf("%s:%d:s", who, i)
				}
				st, got := s.ask(t, client, key, m, stream)
				if st != 200 {
					continue
				}
				answered.Add(1)
				// An empty answer (a 204 relayed) is nobody's; any other must be m.
				if got != m && got != "" {
					crossed.Add(1)
					t.Errorf("request %s received %q", m, got)
				}
			}
		})
	}
	wg.Wait()
	if crossed.Load() != 0 {
		t.Fatalf("%d of %d answered requests received another request's answer", crossed.Load(), answered.Load())
	}
	// About half the requests meet a behaviour that still ends in their own answer.
	if answered.Load() < n/3 {
		t.Errorf("only %d of %d requests were answered", answered.Load(), n)
	}
	for i := 1; i <= n; i++ {
		for _, m := range []string{fmt.Sprintf("A:%d:n", i), fmt.Sprintf("B:%d:n", i), fmt.Sprintf("A:%d:s", i), fmt.Sprintf("B:%d:s", i)} {
			if got := u.times(m); got > 1 {
				t.Errorf("the upstream received %s %d times", m, got)
			}
		}
	}
}

func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// Client headers that steer an upstream account (OpenAI-Organization, OpenAI-Project) or
// its features (OpenAI-Beta) reach the operator's upstream only where the route allows.
func TestClientHeadersPassOnlyWhereAllowed(t *testing.T) {
	closed := newFakeUpstream(t, 200, fixture(t, "openai_chat_nonstream_usage.json"))
	open := newFakeUpstream(t, 200, fixture(t, "openai_chat_nonstream_usage.json"))
	e := newEnv(t, []loom.Route{
		{Name: "closed", Models: []string{"m-closed"}, Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: closed.URL + "/v1", APIKey: "sk"})},
		{Name: "open", Models: []string{"m-open"}, Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: open.URL + "/v1", APIKey: "sk", ClientHeaders: provider.OpenAIHeaders})},
	})
	for _, model := range []string{"m-closed", "m-open"} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("OpenAI-Organization", "org-other")
		req.Header.Set("OpenAI-Project", "proj-other")
		req.Header.Set("OpenAI-Beta", "assistants=v2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", model, resp.StatusCode)
		}
	}
	pick := func(h http.Header) []string {
		return []string{h.Get("OpenAI-Organization"), h.Get("OpenAI-Project"), h.Get("OpenAI-Beta")}
	}
	if diff := cmp.Diff([]string{"", "", ""}, pick(closed.lastCall(t).Header)); diff != "" {
		t.Errorf("a route that allows none passed client headers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"org-other", "proj-other", "assistants=v2"}, pick(open.lastCall(t).Header)); diff != "" {
		t.Errorf("a route that allows them did not pass them (-want +got):\n%s", diff)
	}
}

// blockingStore holds the first ListProviderConfigs after it has read the store, until
// release is closed: a lookup caught in flight.
type blockingStore struct {
	tenancy.Store
	once             sync.Once
	reading, release chan struct{}
}

func (s *blockingStore) ListProviderConfigs(ctx context.Context, tenantID string) ([]tenancy.ProviderConfig, error) {
	cfgs, err := s.Store.ListProviderConfigs(ctx, tenantID)
	s.once.Do(func() { close(s.reading); <-s.release })
	return cfgs, err
}

// A provider config put through Admin takes effect at once on this gateway even while a lookup that read
// the old configuration is still in flight: that lookup must not cache what it read.
func TestPutProviderConfigRacingLookup(t *testing.T) {
	body := fixture(t, "openai_chat_nonstream_usage.json")
	oldUp, newUp := newFakeUpstream(t, 200, body), newFakeUpstream(t, 200, body)
	bs := &blockingStore{reading: make(chan struct{}), release: make(chan struct{})}
	gw := newEnv(t, nil, func(c *loom.Config) { bs.Store = c.Store; c.Store = bs })
	ctx := context.Background()
	set := func(url, key string) {
		t.Helper()
		// The first call reaches the store before any lookup; the once is spent after.
		if err := gw.gw.Admin().PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: gw.tenantID, Name: "own", Kind: "openai",
			BaseURL: url + "/v1", Models: []string{"gpt-4o"}}, key); err != nil {
			t.Fatal(err)
		}
	}
	set(oldUp.URL, "sk-old")
	req := `{"model":"own/gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	done := make(chan int)
	go func() {
		resp := gw.post(t, gw.key, req)
		done <- resp.StatusCode
	}()
	<-bs.reading // the lookup has read the old configuration
	set(newUp.URL, "sk-new")
	close(bs.release)
	if st := <-done; st != 200 {
		t.Fatalf("in-flight request: %d", st)
	}
	if resp := gw.post(t, gw.key, req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := newUp.lastCall(t).Header.Get("Authorization"); got != "Bearer sk-new" {
		t.Errorf("the request after the change went with %q", got)
	}
	oldUp.mu.Lock()
	defer oldUp.mu.Unlock()
	if len(oldUp.calls) != 1 {
		t.Errorf("the old upstream got %d calls, want only the in-flight one", len(oldUp.calls))
	}
}

// idempotentProvider sends requests with an idempotency key over a Transport, as a
// custom provider for an upstream that honours one may.
type idempotentProvider struct {
	url    string
	client *http.Client
}

func (p *idempotentProvider) Chat(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url, strings.NewReader(string(req.Body)))
	hr.Header.Set("Idempotency-Key", "idem-1")
	resp, err := p.client.Do(hr)
	if err != nil {
		return nil, err
	}
	return &provider.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: resp.Body, ContentLength: resp.ContentLength}, nil
}

// A re-send the transport takes is noted in the request's trace.
func TestTransportRetryIsTraced(t *testing.T) {
	var cut atomic.Bool
	u := newRawUpstream(t, false, func(m string) action {
		if m == "retry" && cut.CompareAndSwap(false, true) {
			return action{close: true} // read in full, then the connection is cut
		}
		return action{bytes: answer(m)}
	})
	p := &idempotentProvider{url: "http://" + u.ln.Addr().String() + "/v1/chat/completions", client: &http.Client{Transport: &provider.Transport{}}}
	s := newSharedRoute(t, u, func(c *loom.Config) {
		c.Routes = []loom.Route{{Name: "idem", Models: []string{"gpt-4o-mini"}, Provider: p}}
	})
	client := &http.Client{}
	for _, m := range []string{"warm", "retry"} {
		if st, got := s.ask(t, client, s.key, m, false); st != 200 || got != m {
			t.Fatalf("%s: %d %q", m, st, got)
		}
	}
	traces := s.traces(t, 2)
	var got []int
	for _, tr := range traces {
		got = append(got, tr.UpstreamRetries)
	}
	if diff := cmp.Diff([]int{0, 1}, got); diff != "" {
		t.Errorf("upstream retries per trace (-want +got):\n%s", diff)
	}
	if n := u.times("retry"); n != 2 {
		t.Errorf("the upstream received the idempotent request %d times, want 2", n)
	}
}
