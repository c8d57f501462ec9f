package analytics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/loom-gateway/loom/tenancy"
)

// TestAdminPagesBrowser: an admin signs in, creates a tenant and a key in the pages, the
// key works against /v1/chat/completions (the official SDK), and revoking it in the pages
// makes the next request 401; deactivating the tenant refuses its keys until it is
// reactivated; the raw key is shown once only, the upstream API key never; every action is
// in the audit log; signing out ends the token.
func TestAdminPagesBrowser(t *testing.T) {
	e := newAdminPagesEnv(t, nil) // no spend rollups: the page must say spend is not available
	seedTenants(t, e)
	b := newBrowser(t, e.srv.URL)

	// A wrong password is refused on the form, and the password field is emptied.
	b.run(t, chromedp.Navigate(e.srv.URL+"/admin.html"), chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), adminUser), chromedp.SendKeys(chromedp.CSS("#password"), "not the password at all"),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)))
	b.waitFor(t, "refusal", `document.getElementById('signin-error').textContent === 'Wrong username or password.'`)
	if v := eval[string](t, b, `document.getElementById('password').value`); v != "" {
		t.Errorf("the password field keeps %q after a refusal", v)
	}
	b.screenshot(t, "admin-signin")
	signIn(t, b, e.srv.URL)
	if ok := eval[bool](t, b, `sessionStorage.getItem('loom.admin.token').startsWith('loomadm_') && document.cookie === ''`); !ok {
		t.Error("the admin token is not in sessionStorage, or a cookie was set")
	}

	// Create a tenant: its page opens.
	b.run(t, chromedp.SendKeys(chromedp.CSS("#create-tenant input"), "globex"), chromedp.Click(chromedp.CSS("#create-tenant button")))
	b.waitFor(t, "tenant page", `document.getElementById('tenant-name')?.textContent === 'globex' && !!document.querySelector('#keys')`)
	tenantID := eval[string](t, b, `new URLSearchParams(location.search).get('id')`)
	if _, err := e.gw.Admin().GetTenant(context.Background(), tenantID); err != nil {
		t.Fatalf("the tenant of the page's URL: %v", err)
	}

	// Create a key: the raw key is shown once, copied by the button, and works.
	raw := createKey(t, b, "production")
	if _, err := chromedp.CallBrowser(b.ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
		Permission: &cdpbrowser.PermissionDescriptor{Name: "clipboard-read"}, Setting: "granted", Origin: e.srv.URL}); err != nil {
		t.Fatal(err)
	}
	b.click(t, "#copy-key")
	b.waitFor(t, "copied", `document.getElementById('status').textContent === 'The key is on the clipboard.'`)
	clip, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil || clip != raw {
		t.Errorf("clipboard %q (%v), want the new key", clip, err)
	}
	if got := e.chat(t, raw, "mock-1"); got != http.StatusOK {
		t.Fatalf("a chat completion with the new key: %d", got)
	}
	keyID := eval[string](t, b, `document.querySelector('#keys tbody tr').dataset.id`)
	if s := eval[string](t, b, `document.querySelector('#keys tbody tr td:nth-child(2)').textContent`); !strings.HasPrefix(raw, strings.TrimSuffix(s, "…")) {
		t.Errorf("key prefix %q is not the start of the key", s)
	}

	// A provider configuration: the upstream key leaves the field at once and is shown
	// only by its last four characters.
	const secret = "sk-upstream-secret-9f3c"
	b.run(t, chromedp.SendKeys(chromedp.CSS(`#provider-form [name=name]`), "up"),
		chromedp.SendKeys(chromedp.CSS(`#provider-form [name=kind]`), "mock"),
		chromedp.SendKeys(chromedp.CSS(`#provider-form [name=models]`), "mock-1\nmock-2"),
		chromedp.SendKeys(chromedp.CSS(`#provider-form [name=api_key]`), secret),
		chromedp.Click(chromedp.CSS(`#provider-form button[type=submit]`)))
	b.waitFor(t, "provider listed", `!!document.querySelector('#providers tr[data-name="up"] .key-last4')`)
	var configs struct {
		Data []struct {
			HasAPIKey   bool   `json:"has_api_key"`
			APIKeyLast4 string `json:"api_key_last4"`
		}
	}
	e.adminCall(t, http.MethodGet, "/admin/tenants/"+tenantID+"/providers", nil, &configs)
	if len(configs.Data) != 1 || !configs.Data[0].HasAPIKey || configs.Data[0].APIKeyLast4 != secret[len(secret)-4:] {
		t.Fatalf("the provider configuration put by the page: %+v", configs.Data)
	}
	diffStrings(t, "the upstream key as shown", "••••"+secret[len(secret)-4:],
		eval[string](t, b, `document.querySelector('#providers tr[data-name="up"] .key-last4').textContent`))
	diffStrings(t, "provider models", []string{"mock-1", "mock-2"},
		eval[[]string](t, b, `[...document.querySelectorAll('#providers tr[data-name="up"] .chip')].map(c => c.textContent)`))
	if leaked := eval[bool](t, b, fmt.Sprintf(`document.querySelector('#provider-form [name=api_key]').value !== '' || document.body.innerText.includes(%q) || JSON.stringify(sessionStorage).includes(%[1]q)`, secret)); leaked {
		t.Error("the upstream API key is still in the page")
	}
	b.waitFor(t, "spend not available", `document.getElementById('spend-unavailable')?.textContent.startsWith('Spend is not available')`)
	b.screenshot(t, "admin-tenant")

	// Away and back, and a reload: the raw key is gone for good.
	b.click(t, "a.back")
	b.waitFor(t, "tenants list", fmt.Sprintf(`!!document.querySelector('#tenants tr[data-id="%s"]')`, tenantID))
	diffStrings(t, "the new tenant's row", []string{"globex", "active", "1 / 1"},
		eval[[]string](t, b, fmt.Sprintf(`[...document.querySelectorAll('#tenants tr[data-id="%s"] td')].slice(0, 3).map(td => td.textContent)`, tenantID)))
	b.screenshot(t, "admin-tenants")
	b.run(t, chromedp.NavigateBack())
	b.waitFor(t, "tenant page again", `document.getElementById('tenant-name')?.textContent === 'globex' && !!document.querySelector('#keys tbody tr')`)
	gone := fmt.Sprintf(`!document.getElementById('new-key') && !document.documentElement.outerHTML.includes(%q) && !JSON.stringify(sessionStorage).includes(%[1]q)`, raw)
	if !eval[bool](t, b, gone) {
		t.Error("the raw key is shown again after navigating away and back")
	}
	b.run(t, chromedp.Reload())
	b.waitFor(t, "tenant page reloaded", `!!document.querySelector('#keys tbody tr')`)
	if !eval[bool](t, b, gone) {
		t.Error("the raw key is shown again after a reload")
	}

	// Revoke, confirmed by a second click: the next request is refused.
	revoke := fmt.Sprintf(`#keys tr[data-id="%s"] button.revoke`, keyID)
	b.click(t, revoke)
	b.waitFor(t, "armed", fmt.Sprintf(`document.querySelector('%s').textContent === 'Confirm revoke'`, revoke))
	if got := e.chat(t, raw, "mock-1"); got != http.StatusOK {
		t.Errorf("one click revoked the key already (%d)", got)
	}
	b.click(t, revoke)
	b.waitFor(t, "revoked", fmt.Sprintf(`document.querySelector('#keys tr[data-id="%s"] .badge')?.textContent === 'revoked'`, keyID))
	if got := e.chat(t, raw, "mock-1"); got != http.StatusUnauthorized {
		t.Errorf("the revoked key's next request: %d, want 401", got)
	}

	// Deactivate refuses the tenant's keys at once (403 tenant_inactive); reactivate lets them in again.
	second := createKey(t, b, "second")
	for _, step := range []struct {
		badge string
		want  int
	}{{"inactive", http.StatusForbidden}, {"active", http.StatusOK}} {
		b.click(t, "#toggle-status")
		b.waitFor(t, step.badge, fmt.Sprintf(`document.querySelector('h1 .badge')?.textContent === '%s'`, step.badge))
		if got := e.chat(t, second, "mock-1"); got != step.want {
			t.Errorf("a request of the tenant %s: %d, want %d", step.badge, got, step.want)
		}
	}

	// Hard delete: the button works only once the tenant's name is typed.
	b.run(t, chromedp.SendKeys(chromedp.CSS("#delete-confirm"), "globe"))
	if !eval[bool](t, b, `document.querySelector('#delete-form button').disabled`) {
		t.Error("the delete button is on before the name is typed in full")
	}
	b.run(t, chromedp.SendKeys(chromedp.CSS("#delete-confirm"), "x"))
	if eval[bool](t, b, `document.querySelector('#delete-form button').disabled`) {
		t.Error("the delete button is off with the tenant's name typed")
	}
	b.click(t, "#delete-form button")
	b.waitFor(t, "deleted", `document.getElementById('status').textContent.startsWith('Tenant "globex" was deleted')`)
	if _, err := e.gw.Admin().GetTenant(context.Background(), tenantID); !errors.Is(err, tenancy.ErrNotFound) {
		t.Errorf("the tenant after the hard delete: %v", err)
	}

	// The audit log has every action, and no secret.
	b.click(t, `#admin-nav [data-view="audit"]`)
	b.waitFor(t, "audit", `document.querySelectorAll('#audit tbody tr').length > 0`)
	actions := eval[[]string](t, b, `[...document.querySelectorAll('#audit tbody tr')].map(r => r.dataset.action)`)
	for _, a := range []string{"login.failure", "login.success", "tenant.create", "key.create", "provider.put", "key.revoke", "tenant.deactivate", "tenant.activate"} {
		if !slices.Contains(actions, a) {
			t.Errorf("the audit page lacks %s: %v", a, actions)
		}
	}
	for _, s := range []string{raw, second, secret, adminPassword} {
		if eval[bool](t, b, fmt.Sprintf(`document.body.innerText.includes(%q)`, s)) {
			t.Errorf("the audit page shows a secret (%.12s…)", s)
		}
	}
	b.screenshot(t, "admin-audit")

	// Sign out ends the token on the server, not only in the tab.
	token := eval[string](t, b, `sessionStorage.getItem('loom.admin.token')`)
	b.click(t, "#signout")
	b.waitFor(t, "signed out", `!document.getElementById('signin').hidden && document.getElementById('view').childElementCount === 0`)
	if eval[bool](t, b, `sessionStorage.length > 0`) {
		t.Error("sign-out left the token in sessionStorage")
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/admin/tenants", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the signed-out token still answers %d", resp.StatusCode)
	}

	// The refused password (401) and the features this gateway lacks (501) log failed
	// requests; nothing else may show.
	if p := b.problemsBut("status of 401", "status of 501"); len(p) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// createKey creates a key named name in the open tenant page and returns its raw key.
func createKey(t *testing.T, b *browser, name string) string {
	t.Helper()
	b.run(t, chromedp.SendKeys(chromedp.CSS("#create-key input"), name), chromedp.Click(chromedp.CSS("#create-key button")))
	b.waitFor(t, "new key", fmt.Sprintf(`document.getElementById('new-key')?.value.startsWith('loom_') && document.querySelector('#new-key-box strong').textContent === 'Key "%s" created.'`, name))
	return eval[string](t, b, `document.getElementById('new-key').value`)
}

// seedTenants adds two tenants with keys and a little traffic, so the list has rows.
func seedTenants(t *testing.T, e *adminPagesEnv) {
	t.Helper()
	ctx := context.Background()
	for i, name := range []string{"acme-prod", "initech-staging"} {
		ten, err := e.gw.Admin().CreateTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		raw, _, err := e.gw.Admin().CreateKey(ctx, ten.ID, "backend")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.gw.Admin().CreateKey(ctx, ten.ID, "batch"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if got := e.chat(t, raw, "mock-1"); got != http.StatusOK {
				t.Fatalf("seed request: %d", got)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) { // last use is written every KeyUsageInterval
		ss, err := e.gw.Admin().ListTenants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := e.gw.Admin().ListKeys(ctx, ss[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if keys[0].LastUsedAt != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the seed key's last use was never recorded")
}
