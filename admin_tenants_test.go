package loom_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

type tenantOut struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Status     string  `json:"status"`
	Keys       int     `json:"keys"`
	ActiveKeys int     `json:"active_keys"`
	LastUsedAt *string `json:"last_used_at"`
}

type keyOut struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	Prefix   string `json:"prefix"`
	Status   string `json:"status"`
	Key      string `json:"key"`
}

type listOf[T any] struct {
	Object string `json:"object"`
	Data   []T    `json:"data"`
}

// chat sends one chat completion with the official SDK and returns its HTTP status (200
// or the error's).
func (e *adminEnv) chat(t *testing.T, key string) int {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "mock-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	var apiErr *openai.Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &apiErr):
		return apiErr.StatusCode
	}
	t.Fatalf("chat: %v", err)
	return 0
}

// Tenants and keys through the admin API take effect on the data plane at once: a new
// key works, a revoked one is refused on its next request, a deactivated tenant's keys
// are all refused, a reactivated tenant's active keys work again.
func TestAdminTenantsAndKeys(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect)
			var ten tenantOut
			e.expect(t, "POST", "/admin/tenants", e.token, map[string]string{"name": "Acme & Sons"}, http.StatusCreated, &ten)
			if ten.Name != "Acme & Sons" || ten.Status != "active" || ten.ID == "" {
				t.Fatalf("created %+v", ten)
			}
			var k1, k2 keyOut
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys", e.token, map[string]string{"name": "ci"}, http.StatusCreated, &k1)
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys", e.token, map[string]string{"name": "prod"}, http.StatusCreated, &k2)
			if k1.Key == "" || k1.Prefix == "" || k1.Key[:len(k1.Prefix)] != k1.Prefix || k1.Status != "active" || k1.TenantID != ten.ID {
				t.Fatalf("created key %+v", k1)
			}
			for _, k := range []keyOut{k1, k2} {
				if got := e.chat(t, k.Key); got != http.StatusOK {
					t.Fatalf("new key %s: status %d", k.Name, got)
				}
			}
			// The raw key is shown once: never in a list.
			var keys listOf[keyOut]
			b := e.expect(t, "GET", "/admin/tenants/"+ten.ID+"/keys", e.token, nil, http.StatusOK, &keys)
			if len(keys.Data) != 2 || keys.Data[0].Key != "" || containsAny(b, k1.Key, k2.Key) {
				t.Fatalf("key list %s", b)
			}

			// Revoke: refused on its very next request; the other key keeps working.
			var revoked keyOut
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys/"+k1.ID+"/revoke", e.token, nil, http.StatusOK, &revoked)
			if revoked.Status != "revoked" {
				t.Fatalf("revoked %+v", revoked)
			}
			if got := e.chat(t, k1.Key); got != http.StatusUnauthorized {
				t.Fatalf("revoked key: status %d, want 401", got)
			}
			if got := e.chat(t, k2.Key); got != http.StatusOK {
				t.Fatalf("other key: status %d", got)
			}
			e.errCode(t, "POST", "/admin/tenants/"+ten.ID+"/keys/nokey/revoke", e.token, nil, http.StatusNotFound)

			var got tenantOut
			e.expect(t, "GET", "/admin/tenants/"+ten.ID, e.token, nil, http.StatusOK, &got)
			if got.Keys != 2 || got.ActiveKeys != 1 {
				t.Fatalf("tenant %+v", got)
			}

			// Deactivate: every key refused at once (403); reactivate: the active one works.
			e.expect(t, "PATCH", "/admin/tenants/"+ten.ID, e.token, map[string]string{"status": "inactive"}, http.StatusOK, &got)
			if got.Status != "inactive" {
				t.Fatalf("patched %+v", got)
			}
			for _, k := range []keyOut{k1, k2} {
				if s := e.chat(t, k.Key); s != http.StatusForbidden && s != http.StatusUnauthorized {
					t.Fatalf("key %s of an inactive tenant: status %d", k.Name, s)
				}
			}
			if s := e.chat(t, k2.Key); s != http.StatusForbidden {
				t.Fatalf("active key of an inactive tenant: status %d, want 403", s)
			}
			e.expect(t, "PATCH", "/admin/tenants/"+ten.ID, e.token, map[string]string{"status": "active", "name": "Acme Ltd"}, http.StatusOK, &got)
			if got.Status != "active" || got.Name != "Acme Ltd" {
				t.Fatalf("patched %+v", got)
			}
			if s := e.chat(t, k2.Key); s != http.StatusOK {
				t.Fatalf("reactivated: status %d", s)
			}
			if s := e.chat(t, k1.Key); s != http.StatusUnauthorized {
				t.Fatalf("revoked key after reactivation: status %d", s)
			}

			var list listOf[tenantOut]
			e.expect(t, "GET", "/admin/tenants", e.token, nil, http.StatusOK, &list)
			if len(list.Data) != 1 || list.Data[0].ID != ten.ID || list.Data[0].Keys != 2 || list.Data[0].ActiveKeys != 1 {
				t.Fatalf("tenant list %+v", list)
			}

			// Hard delete needs the id repeated.
			if _, p := e.errCode(t, "DELETE", "/admin/tenants/"+ten.ID, e.token, nil, http.StatusBadRequest); p != "confirm" {
				t.Fatalf("param %q", p)
			}
			e.errCode(t, "DELETE", "/admin/tenants/"+ten.ID+"?confirm=other", e.token, nil, http.StatusBadRequest)
			e.expect(t, "DELETE", "/admin/tenants/"+ten.ID+"?confirm="+ten.ID, e.token, nil, http.StatusOK, nil)
			if s := e.chat(t, k2.Key); s != http.StatusUnauthorized {
				t.Fatalf("key of a deleted tenant: status %d", s)
			}
			e.errCode(t, "GET", "/admin/tenants/"+ten.ID, e.token, nil, http.StatusNotFound)
			e.errCode(t, "GET", "/admin/tenants/"+ten.ID+"/keys", e.token, nil, http.StatusNotFound)
			e.errCode(t, "POST", "/admin/tenants/"+ten.ID+"/keys", e.token, map[string]string{"name": "x"}, http.StatusNotFound)
		})
	}
}

func containsAny(b []byte, subs ...string) bool {
	for _, s := range subs {
		if s != "" && strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// The gateway's own Service behind the admin API (no test adapter): keys made and revoked
// through it take effect at once, and a provider key put through it is sealed.
func TestAdminGatewayService(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect)
			var ten tenantOut
			e.expect(t, "POST", "/admin/tenants", e.token, map[string]string{"name": "own"}, http.StatusCreated, &ten)
			var k keyOut
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys", e.token, map[string]string{"name": "app"}, http.StatusCreated, &k)
			if s := e.chat(t, k.Key); s != http.StatusOK {
				t.Fatalf("new key: %d", s)
			}
			var list listOf[tenantOut]
			e.expect(t, "GET", "/admin/tenants", e.token, nil, http.StatusOK, &list)
			if len(list.Data) != 1 || list.Data[0].Keys != 1 || list.Data[0].ActiveKeys != 1 {
				t.Fatalf("tenants %+v", list.Data)
			}
			e.expect(t, "POST", "/admin/tenants/"+ten.ID+"/keys/"+k.ID+"/revoke", e.token, nil, http.StatusOK, nil)
			if s := e.chat(t, k.Key); s != http.StatusUnauthorized {
				t.Fatalf("revoked key: %d", s)
			}
			const secret = "sk-own-service-secret-9876"
			var p providerOut
			b := e.expect(t, "PUT", "/admin/tenants/"+ten.ID+"/providers/own", e.token,
				map[string]any{"kind": "mock", "api_key": secret}, http.StatusOK, &p)
			if !p.HasAPIKey || strings.Contains(string(b), secret) {
				t.Fatalf("put provider: %s", b)
			}
			checkSealed(t, e.db, e.dialect, ten.ID, secret)
			e.errCode(t, "PUT", "/admin/tenants/nope/providers/own", e.token, map[string]any{"kind": "mock"}, http.StatusNotFound)
		})
	}
}
