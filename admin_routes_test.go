package loom_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
)

type providerOut struct {
	Name        string   `json:"name"`
	Kind        string   `json:"kind"`
	BaseURL     string   `json:"base_url"`
	Models      []string `json:"models"`
	HasAPIKey   bool     `json:"has_api_key"`
	APIKeyLast4 string   `json:"api_key_last4"`
}

type eventOut struct {
	ID         int64  `json:"id"`
	Actor      string `json:"actor"`
	Action     string `json:"action"`
	Target     string `json:"target"`
	ClientAddr string `json:"client_addr"`
}

// Every admin route, on both stores, through the gateway on loopback; then the audit log
// holds every action and none of the secrets that went through.
func TestAdminEveryRouteAudited(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect)
			const (
				typedInName = "hunter2-password-in-the-name-field"
				opsPass1    = "ops first password"
				opsPass2    = "ops second password"
				wrongPass   = "not the password!"
				upstreamKey = "sk-upstream-secret-abcdefWXYZ"
			)
			secrets := []string{adminPassword, opsPass1, opsPass2, wrongPass, typedInName, upstreamKey, e.token}

			// Sign-in failures: a known name is recorded, an unknown one is not.
			e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": adminName, "password": wrongPass}, http.StatusUnauthorized)
			e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": typedInName, "password": wrongPass}, http.StatusUnauthorized)

			// Users.
			e.expect(t, "POST", "/admin/users", e.token, map[string]string{"username": "ops", "password": opsPass1}, http.StatusCreated, nil)
			if _, p := e.errCode(t, "POST", "/admin/users", e.token, map[string]string{"username": "weak", "password": "short"}, http.StatusBadRequest); p != "password" {
				t.Errorf("weak password: param %q", p)
			}
			e.errCode(t, "POST", "/admin/users", e.token, map[string]string{"username": "ops", "password": opsPass1}, http.StatusConflict)
			var users listOf[struct {
				Username string `json:"username"`
			}]
			b := e.expect(t, "GET", "/admin/users", e.token, nil, http.StatusOK, &users)
			if len(users.Data) != 2 || users.Data[0].Username != "ops" || users.Data[1].Username != adminName || strings.Contains(string(b), "argon2") {
				t.Fatalf("users: %s", b)
			}
			opsToken := e.login(t, "ops", opsPass1)
			secrets = append(secrets, opsToken)
			e.expect(t, "PUT", "/admin/users/ops/password", e.token, map[string]string{"password": opsPass2}, http.StatusOK, nil)
			e.errCode(t, "GET", "/admin/users", opsToken, nil, http.StatusUnauthorized)
			e.errCode(t, "PUT", "/admin/users/nobody/password", e.token, map[string]string{"password": opsPass2}, http.StatusNotFound)
			e.expect(t, "DELETE", "/admin/users/ops", e.token, nil, http.StatusOK, nil)
			e.errCode(t, "DELETE", "/admin/users/ops", e.token, nil, http.StatusNotFound)
			if code, _ := e.errCode(t, "DELETE", "/admin/users/"+adminName, e.token, nil, http.StatusConflict); code != "last_admin_user" {
				t.Errorf("last user: code %q", code)
			}

			// A tenant, a key, a provider configuration with its own upstream key.
			var ten tenantOut
			e.expect(t, "POST", "/admin/tenants", e.token, map[string]string{"name": "acme"}, http.StatusCreated, &ten)
			e.expect(t, "PATCH", "/admin/tenants/"+ten.ID, e.token, map[string]string{"name": "acme two"}, http.StatusOK, nil)
			e.expect(t, "PATCH", "/admin/tenants/"+ten.ID, e.token, map[string]string{"status": "inactive"}, http.StatusOK, nil)
			e.expect(t, "PATCH", "/admin/tenants/"+ten.ID, e.token, map[string]string{"status": "active"}, http.StatusOK, nil)
			var key keyOut
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys", e.token, map[string]string{"name": "app"}, http.StatusCreated, &key)
			secrets = append(secrets, key.Key)

			up := newFakeUpstream(t, 200, fixture(t, "openai_chat_nonstream_usage.json"))
			var prov providerOut
			b = e.expect(t, "PUT", "/admin/tenants/"+ten.ID+"/providers/byok", e.token, map[string]any{
				"kind": "openai", "base_url": up.URL + "/v1", "models": []string{"gpt-4o-mini"}, "api_key": upstreamKey,
			}, http.StatusOK, &prov)
			want := providerOut{Name: "byok", Kind: "openai", BaseURL: up.URL + "/v1", Models: []string{"gpt-4o-mini"}, HasAPIKey: true, APIKeyLast4: "WXYZ"}
			if diff := cmp.Diff(want, prov); diff != "" || strings.Contains(string(b), upstreamKey) {
				t.Fatalf("put provider (-want +got):\n%s%s", diff, b)
			}
			var provs listOf[providerOut]
			b = e.expect(t, "GET", "/admin/tenants/"+ten.ID+"/providers", e.token, nil, http.StatusOK, &provs)
			if len(provs.Data) != 1 || provs.Data[0].APIKeyLast4 != "WXYZ" || strings.Contains(string(b), upstreamKey[:12]) {
				t.Fatalf("providers: %s", b)
			}
			// The key is stored sealed, and opened for the upstream call.
			checkSealed(t, e.db, e.dialect, ten.ID, upstreamKey)
			c := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
			if _, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "byok/gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			}); err != nil {
				t.Fatal(err)
			}
			if got := up.lastCall(t).Header.Get("Authorization"); got != "Bearer "+upstreamKey {
				t.Fatalf("upstream Authorization %q", got)
			}
			e.errCode(t, "PUT", "/admin/tenants/no-such-tenant/providers/byok", e.token, map[string]any{"kind": "openai"}, http.StatusNotFound)
			e.expect(t, "DELETE", "/admin/tenants/"+ten.ID+"/providers/byok", e.token, nil, http.StatusOK, nil)
			e.errCode(t, "DELETE", "/admin/tenants/"+ten.ID+"/providers/byok", e.token, nil, http.StatusNotFound)
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys/"+key.ID+"/revoke", e.token, nil, http.StatusOK, nil)

			// Spend, from the analytics rollups (a stand-in here: they are another package's).
			e.spend.rows = []analytics.SpendRow{{TenantID: ten.ID, APIKeyID: key.ID, Model: "gpt-4o-mini", Requests: 3, PromptTokens: 30, CompletionTokens: 12, CostMicroUSD: 450, Unpriced: 1}}
			var spend struct {
				Data []map[string]any `json:"data"`
				From time.Time        `json:"from"`
				To   time.Time        `json:"to"`
			}
			e.expect(t, "GET", "/admin/spend?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&tenant="+ten.ID, e.token, nil, http.StatusOK, &spend)
			wantRow := map[string]any{"tenant_id": ten.ID, "api_key_id": key.ID, "model": "gpt-4o-mini", "requests": 3.0, "prompt_tokens": 30.0,
				"completion_tokens": 12.0, "cost_micro_usd": 450.0, "unpriced_requests": 1.0}
			if len(spend.Data) != 1 || cmp.Diff(wantRow, spend.Data[0]) != "" {
				t.Fatalf("spend rows %v", spend.Data)
			}
			q := e.spend.got[len(e.spend.got)-1]
			if q.TenantID != ten.ID || !q.From.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !q.To.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("spend query %+v", q)
			}
			for _, bad := range []string{"from=yesterday", "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "tenant=%00"} {
				e.errCode(t, "GET", "/admin/spend?"+bad, e.token, nil, http.StatusBadRequest)
			}

			e.expect(t, "DELETE", "/admin/tenants/"+ten.ID+"?confirm="+ten.ID, e.token, nil, http.StatusOK, nil)
			second := e.login(t, adminName, adminPassword)
			secrets = append(secrets, second)
			e.expect(t, "POST", "/admin/logout", e.token, nil, http.StatusNoContent, nil)

			// The audit log, paged 4 at a time, newest first.
			var events []eventOut
			before := ""
			for page := 0; ; page++ {
				var p struct {
					Data       []eventOut `json:"data"`
					HasMore    bool       `json:"has_more"`
					NextBefore *int64     `json:"next_before"`
				}
				e.expect(t, "GET", "/admin/audit?limit=4"+before, second, nil, http.StatusOK, &p)
				events = append(events, p.Data...)
				if !p.HasMore {
					break
				}
				before = fmt.Sprintf("&before=%d", *p.NextBefore)
				if page > 50 {
					t.Fatal("audit paging does not end")
				}
			}
			var n int
			if err := e.db.QueryRow(`SELECT count(*) FROM admin_audit`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if len(events) != n {
				t.Fatalf("paged %d audit events, the table has %d", len(events), n)
			}
			got := map[string]int{}
			for i, ev := range events {
				if i > 0 && ev.ID >= events[i-1].ID {
					t.Fatalf("audit not newest first: %d after %d", ev.ID, events[i-1].ID)
				}
				if ev.ClientAddr != "127.0.0.1" {
					t.Errorf("event %s from %q", ev.Action, ev.ClientAddr)
				}
				got[ev.Action]++
			}
			for _, a := range []string{"login.success", "login.failure", "logout", "user.create", "user.password", "user.delete",
				"tenant.create", "tenant.rename", "tenant.deactivate", "tenant.activate", "key.create", "key.revoke",
				"provider.put", "provider.delete", "tenant.delete"} {
				if got[a] == 0 {
					t.Errorf("no %s in the audit log (%v)", a, got)
				}
			}
			if got["login.failure"] != 2 {
				t.Errorf("%d login failures audited, want 2", got["login.failure"])
			}
			checkNoSecrets(t, e.db, secrets)
			checkAppendOnly(t, e.db)
		})
	}
}

// checkSealed fails if the provider config's raw stored bytes hold the key.
func checkSealed(t *testing.T, db *sql.DB, dialect, tenantID, apiKey string) {
	t.Helper()
	q := `SELECT sealed_api_key FROM provider_configs WHERE tenant_id = $1`
	if dialect == "sqlite" {
		q = strings.Replace(q, "$1", "?", 1)
	}
	var raw []byte
	if err := db.QueryRow(q, tenantID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) < len(apiKey) || strings.Contains(string(raw), apiKey) || strings.Contains(string(raw), apiKey[len(apiKey)-8:]) {
		t.Fatalf("the provider API key is not sealed in the database: %q", raw)
	}
}

// checkNoSecrets fails if any column of any audit row holds one of the secrets.
func checkNoSecrets(t *testing.T, db *sql.DB, secrets []string) {
	t.Helper()
	rows, err := db.Query(`SELECT id, at, actor, action, target, client_addr, detail FROM admin_audit`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var cols [7]any
		ptrs := make([]any, len(cols))
		for i := range cols {
			ptrs[i] = &cols[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprint(cols)
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("audit row holds a secret: %s", line)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// checkAppendOnly fails unless the database refuses to change or remove audit rows.
func checkAppendOnly(t *testing.T, db *sql.DB) {
	t.Helper()
	for _, stmt := range []string{`UPDATE admin_audit SET detail = 'x'`, `DELETE FROM admin_audit`} {
		if _, err := db.Exec(stmt); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", stmt, err)
		}
	}
}

// Without AdminConfig.Spend, GET /admin/spend says it is unavailable (501).
func TestAdminSpendUnavailable(t *testing.T) {
	store, astore, _ := openStores(t, "sqlite")
	e := &adminEnv{clock: &adminClock{}}
	users := mustUsers(t, astore)
	gw, err := loom.New(loom.Config{Store: store, Admin: &loom.AdminConfig{Users: users}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Shutdown(context.Background())
	e.srv = newServer(t, gw)
	if _, err := users.CreateUser(context.Background(), adminName, adminPassword); err != nil {
		t.Fatal(err)
	}
	tok := e.login(t, adminName, adminPassword)
	if code, _ := e.errCode(t, "GET", "/admin/spend", tok, nil, http.StatusNotImplemented); code != "spend_unavailable" {
		t.Fatalf("code %q", code)
	}
}
