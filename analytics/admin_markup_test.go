package analytics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/tenancy"
)

// Hostile strings a tenant controls, as the admin pages show them: tenant and key names
// (the admin API refuses < and > in names, but rows written another way hold what they
// hold), provider models, models in spend, audit details.
const (
	xssTenant   = `<img src=x onerror=window.__xss=1>`
	xssTenant2  = `<script>window.__xss=2</script>`
	xssKey      = `<img src=x onerror=window.__xss=3> & "key"`
	xssModelA   = `<script>window.__xss=4</script>`
	xssModelB   = `<img src=x onerror=window.__xss=5>`
	xssDetail   = `name "<img src=x onerror=window.__xss=6>"`
	noMarkupRan = `window.__xss === undefined && document.querySelectorAll('img, script:not([src])').length === 0`
)

// markupSpender answers spend with the hostile model: the rows' source is not what this
// test is about, their rendering is.
type markupSpender struct{ tenantID, keyID string }

func (s *markupSpender) Spend(ctx context.Context, q analytics.SpendQuery) ([]analytics.SpendRow, error) {
	if q.TenantID != s.tenantID {
		return nil, nil
	}
	return []analytics.SpendRow{{TenantID: s.tenantID, APIKeyID: s.keyID, Model: xssModel, Requests: 3,
		PromptTokens: 30, CompletionTokens: 12, CostMicroUSD: 4200}}, nil
}

// TestAdminPagesRenderText: markup and script in tenant names, key names, provider models,
// spend models and audit details show as typed text, no element is made from them, nothing
// runs, and the admin pages carry the dashboard's CSP, which the browser enforces.
func TestAdminPagesRenderText(t *testing.T) {
	ctx := context.Background()
	sp := &markupSpender{}
	e := newAdminPagesEnv(t, func(analytics.Store) analytics.Spender { return sp })
	now := time.Now().UTC().Truncate(time.Microsecond)
	ids := map[string]string{}
	for _, name := range []string{xssTenant, xssTenant2} {
		ids[name] = uuid.NewString()
		if err := e.store.CreateTenant(ctx, tenancy.Tenant{ID: ids[name], Name: name, Status: tenancy.TenantActive, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	_, prefix, hash, err := tenancy.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key := tenancy.APIKey{ID: uuid.NewString(), TenantID: ids[xssTenant], Name: xssKey, Prefix: prefix, Hash: hash, Status: tenancy.KeyActive, CreatedAt: now}
	if err := e.store.CreateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	*sp = markupSpender{tenantID: ids[xssTenant], keyID: key.ID}
	var put map[string]any
	e.adminCall(t, http.MethodPut, "/admin/tenants/"+ids[xssTenant]+"/providers/up", map[string]any{
		"kind": "mock", "models": []string{xssModelA, xssModelB}}, &put)
	if err := e.users.Record(ctx, admin.Event{Actor: "cli", Action: "tenant.create", Target: ids[xssTenant], Detail: xssDetail}); err != nil {
		t.Fatal(err)
	}

	// The pages and their modules carry the dashboard's CSP.
	for _, path := range []string{"/admin.html", "/admin.js", "/admin-keys.js"} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		diffStrings(t, "CSP of "+path, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'", resp.Header.Get("Content-Security-Policy"))
	}

	b := newBrowser(t, e.srv.URL)
	signIn(t, b, e.srv.URL)
	b.waitFor(t, "tenants", `document.querySelectorAll('#tenants tbody tr').length === 2`)
	names := eval[[]string](t, b, `[...document.querySelectorAll('#tenants tbody td.name')].map(td => td.textContent)`)
	slices.Sort(names)
	diffStrings(t, "tenant names in the list", []string{xssTenant, xssTenant2}, names) // sorted: "<i" before "<s"
	if !eval[bool](t, b, noMarkupRan) {
		t.Error("markup in a tenant name became elements or ran, in the list")
	}

	b.click(t, fmt.Sprintf(`#tenants tr[data-id="%s"] a`, ids[xssTenant]))
	b.waitFor(t, "tenant page", `!!document.querySelector('#keys tbody tr') && !!document.querySelector('#spend tbody tr')`)
	got := eval[[]string](t, b, `[document.getElementById('tenant-name').textContent,
		document.querySelector('#keys tbody td.name').textContent,
		...[...document.querySelectorAll('#providers .chip')].map(c => c.textContent),
		document.querySelector('#spend tbody td:nth-child(1)').textContent,
		document.querySelector('#spend tbody td.model').textContent]`)
	diffStrings(t, "hostile strings on the tenant page", []string{xssTenant, xssKey, xssModelA, xssModelB, xssKey, xssModel}, got)
	if !eval[bool](t, b, noMarkupRan) {
		t.Error("markup on the tenant page became elements or ran")
	}
	b.screenshot(t, "admin-tenant-hostile")

	// Phone width: nothing is wider than the screen but the tables, which scroll.
	b.run(t, chromedp.EmulateViewport(390, 844), chromedp.Reload())
	b.waitFor(t, "tenant page on a phone", `!!document.querySelector('#spend tbody tr')`)
	if w := eval[[]int](t, b, `[document.documentElement.scrollWidth, document.documentElement.clientWidth]`); w[0] > w[1] {
		t.Errorf("the tenant page is %d px wide on a phone screen of %d", w[0], w[1])
	}
	b.screenshot(t, "admin-tenant-phone")
	b.run(t, chromedp.EmulateViewport(1280, 900))

	b.click(t, `#admin-nav [data-view="audit"]`)
	b.waitFor(t, "audit", `[...document.querySelectorAll('#audit tbody td')].some(td => td.textContent === `+jsString(xssDetail)+`)`)
	if !eval[bool](t, b, noMarkupRan) {
		t.Error("markup in an audit detail became elements or ran")
	}

	// The CSP is in force: a script element put in the page by hand does not run.
	blocked := eval[bool](t, b, `(() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s); return window.__inline === undefined; })()`)
	if !blocked {
		t.Error("an inline script ran on the admin pages: no CSP in force")
	}
	var reported bool
	for range 50 {
		if len(b.problemsBut()) > len(b.problemsBut("Content Security Policy")) {
			reported = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !reported {
		t.Error("the browser did not report the refused inline script")
	}
	// A token ended elsewhere (expired, or signed out in another tab) signs the page out.
	token := eval[string](t, b, `sessionStorage.getItem('loom.admin.token')`)
	e.send(t, token, http.MethodPost, "/admin/logout", nil, nil)
	b.click(t, `#admin-nav [data-view="tenants"]`)
	b.waitFor(t, "signed out", `!document.getElementById('signin').hidden && document.getElementById('signin-error').textContent.startsWith('Your admin session ended')`)
	if eval[bool](t, b, `sessionStorage.getItem('loom.admin.token') !== null || document.getElementById('view').childElementCount > 0`) {
		t.Error("an ended token left the token or a page behind")
	}

	if p := b.problemsBut("Content Security Policy", "status of 401"); len(p) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string { return fmt.Sprintf("%q", s) }
