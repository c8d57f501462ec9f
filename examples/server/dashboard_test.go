package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestServesDashboard: the dashboard is at / with its security headers, next to the API.
func TestServesDashboard(t *testing.T) {
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	out := &strings.Builder{}
	s, logs, _ := startServer(t, cfg, out)
	tests := []struct {
		name, path, key string
		want            string // status, content type, and whether the CSP header is set
	}{
		{"dashboard", "/", "", "200 text/html; charset=utf-8 csp"},
		{"dashboard module", "/app.js", "", "200 text/javascript; charset=utf-8 csp"},
		{"admin pages", "/admin.html", "", "200 text/html; charset=utf-8 csp"},
		{"admin pages module", "/admin.js", "", "200 text/javascript; charset=utf-8 csp"},
		{"admin API beside them", "/admin/tenants", "", "401 application/json"},
		{"API beside it", "/v1/models", s.BootstrapKey, "200 application/json"},
		{"API without a key", "/v1/traces", "", "401 application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr+tt.path, nil)
			if tt.key != "" {
				req.Header.Set("Authorization", "Bearer "+tt.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got := resp.Status[:3] + " " + resp.Header.Get("Content-Type")
			if strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
				got += " csp"
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("GET %s (-want +got):\n%s", tt.path, diff)
			}
		})
	}
	for _, want := range []string{"dashboard http://", "/admin.html"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the server does not log %q:\n%s", want, logs)
		}
	}
}
