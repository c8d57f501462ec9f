package analytics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

const (
	adminUser     = "root"
	adminPassword = "correct horse battery staple"
)

// adminPagesEnv is the standalone server's layout with the admin API on, over one SQLite
// database: the gateway at /v1/ and /admin/, the dashboard and its admin pages at /.
type adminPagesEnv struct {
	srv   *httptest.Server
	gw    *loom.Gateway
	store tenancy.Store
	reads analytics.Store
	users *admin.Users
}

// newAdminPagesEnv starts the gateway; spend, if not nil, answers GET /admin/spend.
func newAdminPagesEnv(t *testing.T, spend func(analytics.Store) analytics.Spender) *adminPagesEnv {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		t.Fatal(err)
	}
	e := &adminPagesEnv{store: tenancy.NewSQLiteStore(db), reads: analytics.NewSQLiteStore(db)}
	users, err := admin.NewUsers(admin.UsersOptions{Store: admin.NewSQLiteStore(db), Params: admin.Params{Memory: 64, Time: 1, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	e.users = users
	if _, err := users.CreateUser(ctx, adminUser, adminPassword); err != nil {
		t.Fatal(err)
	}
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	ac := &loom.AdminConfig{Users: users}
	if spend != nil {
		ac.Spend = spend(e.reads)
	}
	e.gw, err = loom.New(loom.Config{
		Store:   e.store,
		Keyring: keyring,
		Routes: []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}),
			Models: []string{"mock-1", xssModel}}},
		Tracing:   tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewSQLiteSink(db)}},
		Analytics: e.reads,
		Admin:     ac,
		// Last use is written often, so the tenants list shows it soon.
		KeyUsageInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", e.gw)
	mux.Handle("/admin/", e.gw)
	mux.Handle("/", analytics.Dashboard())
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.gw.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// chat sends one chat completion with key through the official SDK and returns the
// HTTP status it ended with (200, or the error's).
func (e *adminPagesEnv) chat(t *testing.T, key, model string) int {
	t.Helper()
	client := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	var apiErr *openai.Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &apiErr):
		return apiErr.StatusCode
	}
	t.Fatalf("chat completion: %v", err)
	return 0
}

// adminCall sends an admin API request, signed in with a token of its own, and decodes
// the answer into out (if not nil).
func (e *adminPagesEnv) adminCall(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var login struct{ Token string }
	e.send(t, "", http.MethodPost, "/admin/login", map[string]string{"username": adminUser, "password": adminPassword}, &login)
	e.send(t, login.Token, method, path, body, out)
}

func (e *adminPagesEnv) send(t *testing.T, token, method, path string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// signIn fills the admin sign-in form and waits for the tenants page.
func signIn(t *testing.T, b *browser, origin string) {
	t.Helper()
	b.run(t, chromedp.Navigate(origin+"/admin.html"), chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), adminUser), chromedp.SendKeys(chromedp.CSS("#password"), adminPassword),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)))
	b.waitFor(t, "tenants page", `!!document.querySelector('#view h1') && document.querySelector('#view h1').textContent === 'Tenants' && !document.querySelector('#view .muted')?.textContent.startsWith('Loading')`)
}

// click clicks the first element matching sel once it exists.
func (b *browser) click(t *testing.T, sel string) {
	t.Helper()
	b.run(t, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// problemsBut returns what the page reported, less the lines holding one of expected.
func (b *browser) problemsBut(expected ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, p := range b.problems {
		for _, x := range expected {
			if strings.Contains(p, x) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

func diffStrings(t *testing.T, what string, want, got any) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}
