package loom_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzAdminAPI sends arbitrary methods, paths, queries and bodies to the admin API of a
// real gateway (SQLite) with a valid admin token: every answer is JSON, an error is an
// OpenAI-style error and never a 5xx, and none holds the admin's password. Sign-out and
// the user routes (which can end the token) are covered by the route tests instead.
func FuzzAdminAPI(f *testing.F) {
	e := newAdminEnv(f, "sqlite")
	var ten tenantOut
	e.expect(f, "POST", "/admin/tenants", e.token, map[string]string{"name": "fuzzed"}, http.StatusCreated, &ten)
	tk := "tenants/" + ten.ID
	for _, s := range []struct {
		method uint8
		path   string
		body   string
	}{
		{0, "tenants", ""},
		{1, "tenants", `{"name":"a"}`},
		{2, tk, `{"name":"b","status":"inactive"}`},
		{1, tk + "/keys", `{"name":"k"}`},
		{3, tk + "/providers/p", `{"kind":"openai","base_url":"https://api.openai.com/v1","api_key":"sk-123456789","models":["m"]}`},
		{4, tk + "/providers/p", ""},
		{1, tk + "/keys/x/revoke", ""},
		{0, "spend?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&tenant=" + ten.ID, ""},
		{0, "audit?limit=5&before=9", ""},
		{4, tk + "?confirm=" + ten.ID, ""},
		{1, "tenants", "{\"name\":\"\xff\"}"},
	} {
		f.Add(s.method, s.path, []byte(s.body))
	}
	methods := []string{"GET", "POST", "PATCH", "PUT", "DELETE"}
	f.Fuzz(func(t *testing.T, method uint8, path string, body []byte) {
		if strings.Contains(path, "logout") || strings.Contains(path, "users") {
			t.Skip("ends or changes the token")
		}
		u, err := url.Parse("/admin/" + path)
		if err != nil || u.Host != "" || u.Scheme != "" || !requestTarget(u.RequestURI()) {
			t.Skip("not a request path") // net/http refuses it before any handler runs
		}
		status, got, h := e.do(t, methods[int(method)%len(methods)], u.RequestURI(), e.token, body)
		if status >= 500 {
			t.Fatalf("%d %s %q: %s", status, methods[int(method)%len(methods)], path, got)
		}
		if strings.Contains(string(got), adminPassword) {
			t.Fatalf("an answer holds the admin password: %s", got)
		}
		if status == http.StatusNoContent {
			return
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%d answer of type %q: %s", status, ct, got)
		}
		if status >= 400 {
			var er struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
				} `json:"error"`
			}
			if err := json.Unmarshal(got, &er); err != nil || er.Error == nil || er.Error.Message == "" || er.Error.Type == "" {
				t.Fatalf("%d answer is not an OpenAI-style error: %s", status, got)
			}
		} else if !json.Valid(got) {
			t.Fatalf("%d answer is not JSON: %s", status, got)
		}
	})
}

// requestTarget reports whether s can stand in an HTTP request line: printable ASCII
// without spaces.
func requestTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
