package loom_test

import (
	"net/http"
	"strings"
	"testing"
)

// Hostile input gets a clear OpenAI-style error with the right status, and nothing is
// stored.
func TestAdminHostileInput(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect)
			var ten tenantOut
			e.expect(t, "POST", "/admin/tenants", e.token, map[string]string{"name": "real"}, http.StatusCreated, &ten)
			mb := strings.Repeat("x", 1<<20)
			tk := "/admin/tenants/" + ten.ID
			for _, tc := range []struct {
				name         string
				method, path string
				body         any
				status       int
				code, param  string
			}{
				{"NUL in a tenant name", "POST", "/admin/tenants", map[string]string{"name": "a\x00b"}, 400, "invalid_parameter", "name"},
				{"control character", "POST", "/admin/tenants", map[string]string{"name": "a\x1bb"}, 400, "invalid_parameter", "name"},
				{"invalid UTF-8", "POST", "/admin/tenants", []byte("{\"name\":\"\xff\xfe\"}"), 400, "invalid_body", ""},
				{"megabyte name", "POST", "/admin/tenants", map[string]string{"name": mb}, 400, "invalid_parameter", "name"},
				{"body over the limit", "POST", "/admin/tenants", map[string]string{"name": mb + mb + mb}, 413, "request_too_large", ""},
				{"HTML name", "POST", "/admin/tenants", map[string]string{"name": "<script>alert(1)</script>"}, 400, "invalid_parameter", "name"},
				{"blank name", "POST", "/admin/tenants", map[string]string{"name": "  "}, 400, "invalid_parameter", "name"},
				{"no name", "POST", "/admin/tenants", map[string]string{}, 400, "invalid_parameter", "name"},
				{"unknown field", "POST", "/admin/tenants", map[string]string{"name": "x", "id": "mine"}, 400, "invalid_json", ""},
				{"wrong type", "POST", "/admin/tenants", map[string]int{"name": 5}, 400, "invalid_json", ""},
				{"not JSON", "POST", "/admin/tenants", "name=x", 400, "invalid_json", ""},
				{"empty body", "POST", "/admin/tenants", "", 400, "invalid_json", ""},
				{"two objects", "POST", "/admin/tenants", `{"name":"a"}{"name":"b"}`, 400, "invalid_json", ""},
				{"NUL in a key name", "POST", tk + "/keys", map[string]string{"name": "k\x00"}, 400, "invalid_parameter", "name"},
				{"HTML key name", "POST", tk + "/keys", map[string]string{"name": "<img src=x onerror=alert(1)>"}, 400, "invalid_parameter", "name"},
				{"NUL in a path id", "GET", "/admin/tenants/a%00b", nil, 400, "invalid_parameter", "id"},
				{"long path id", "GET", "/admin/tenants/" + strings.Repeat("a", 300), nil, 400, "invalid_parameter", "id"},
				{"markup in a path id", "GET", "/admin/tenants/%3Cb%3E", nil, 400, "invalid_parameter", "id"},
				{"bad status", "PATCH", tk, map[string]string{"status": "deleted"}, 400, "invalid_parameter", "status"},
				{"empty patch", "PATCH", tk, map[string]string{}, 400, "invalid_parameter", "name"},
				{"HTML rename", "PATCH", tk, map[string]string{"name": "<b>x</b>"}, 400, "invalid_parameter", "name"},
				{"script URL", "PUT", tk + "/providers/p", map[string]any{"kind": "openai", "base_url": "javascript:alert(1)"}, 400, "invalid_parameter", "base_url"},
				{"URL with credentials", "PUT", tk + "/providers/p", map[string]any{"kind": "openai", "base_url": "https://u:p@example.com/v1"}, 400, "invalid_parameter", "base_url"},
				{"NUL in a model", "PUT", tk + "/providers/p", map[string]any{"kind": "openai", "models": []string{"a\x00"}}, 400, "invalid_parameter", "models"},
				{"markup kind", "PUT", tk + "/providers/p", map[string]any{"kind": "<b>"}, 400, "invalid_parameter", "kind"},
				{"provider name with a slash", "PUT", tk + "/providers/a%2Fb", map[string]any{"kind": "openai"}, 400, "invalid_parameter", "name"},
				{"NUL in an API key", "PUT", tk + "/providers/p", map[string]any{"kind": "openai", "api_key": "sk-\x00"}, 400, "invalid_parameter", "api_key"},
				{"NUL in a username", "POST", "/admin/users", map[string]string{"username": "a\x00", "password": adminPassword}, 400, "invalid_parameter", "username"},
				{"HTML username", "POST", "/admin/users", map[string]string{"username": "<b>", "password": adminPassword}, 400, "invalid_parameter", "username"},
				{"NUL in a password", "POST", "/admin/users", map[string]string{"username": "ok", "password": adminPassword + "\x00"}, 400, "invalid_parameter", "password"},
				{"audit limit 0", "GET", "/admin/audit?limit=0", nil, 400, "invalid_parameter", "limit"},
				{"audit limit too big", "GET", "/admin/audit?limit=1000", nil, 400, "invalid_parameter", "limit"},
				{"audit before not a number", "GET", "/admin/audit?before=abc", nil, 400, "invalid_parameter", "before"},
				{"wrong method", "DELETE", "/admin/tenants", nil, 405, "method_not_allowed", ""},
				{"unknown admin URL", "GET", "/admin/nope", nil, 404, "unknown_url", ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					code, param := e.errCode(t, tc.method, tc.path, e.token, tc.body, tc.status)
					if code != tc.code || param != tc.param {
						t.Errorf("code %q param %q, want %q %q", code, param, tc.code, tc.param)
					}
				})
			}
			// Sign-in refuses malformed input before any work, with or without a token.
			for _, body := range []map[string]string{
				{"username": "a\x00", "password": "x"}, {"username": mb, "password": "x"}, {"username": adminName, "password": mb},
			} {
				e.errCode(t, "POST", "/admin/login", "", body, http.StatusBadRequest)
			}
			_, _, h := e.do(t, "GET", "/admin/login", "", nil)
			if got := h.Get("Allow"); got != "POST" {
				t.Errorf("GET /admin/login: Allow %q", got)
			}
			var list listOf[tenantOut]
			e.expect(t, "GET", "/admin/tenants", e.token, nil, http.StatusOK, &list)
			if len(list.Data) != 1 || list.Data[0].Name != "real" || list.Data[0].Keys != 0 {
				t.Fatalf("hostile input was stored: %+v", list.Data)
			}
		})
	}
}
