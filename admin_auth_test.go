package loom_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/provider"
)

// A sign-in token is refused when missing, malformed, tampered, expired, ended, from
// another deployment, or a JWT with alg "none"; a good one works until then.
func TestAdminTokenRefused(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect)
			e.expect(t, "GET", "/admin/tenants", e.token, nil, http.StatusOK, nil)

			other := newAdminEnv(t, dialect) // another deployment: its own database
			tampered := []byte(e.token)
			i := len(admin.TokenPrefix) + 5
			if tampered[i] == 'A' {
				tampered[i] = 'B'
			} else {
				tampered[i] = 'A'
			}
			enc := base64.RawURLEncoding.EncodeToString
			jwtNone := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"root","exp":4102444800}`)) + "."
			for _, tc := range []struct{ name, header string }{
				{"no token", ""},
				{"not bearer", "Basic " + base64.StdEncoding.EncodeToString([]byte("root:"+adminPassword))},
				{"empty bearer", "Bearer "},
				{"garbage", "Bearer garbage"},
				{"tampered", "Bearer " + string(tampered)},
				{"truncated", "Bearer " + e.token[:len(e.token)-1]},
				{"other deployment", "Bearer " + other.token},
				{"jwt alg none", "Bearer " + jwtNone},
				{"tenant api key shape", "Bearer loom_" + strings.Repeat("a", 43)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req, _ := http.NewRequest("GET", e.srv.URL+"/admin/tenants", nil)
					if tc.header != "" {
						req.Header.Set("Authorization", tc.header)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("status %d, want 401", resp.StatusCode)
					}
				})
			}

			// Expired: the clock passes the token's lifetime.
			short := e.login(t, adminName, adminPassword)
			e.expect(t, "GET", "/admin/users", short, nil, http.StatusOK, nil)
			e.clock.Advance(e.users.TokenTTL() + time.Second)
			if code, _ := e.errCode(t, "GET", "/admin/users", short, nil, http.StatusUnauthorized); code != "invalid_admin_token" {
				t.Errorf("expired token: code %q", code)
			}

			// Logout ends a token at once; others stay valid.
			a, b := e.login(t, adminName, adminPassword), e.login(t, adminName, adminPassword)
			e.expect(t, "POST", "/admin/logout", a, nil, http.StatusNoContent, nil)
			e.errCode(t, "GET", "/admin/users", a, nil, http.StatusUnauthorized)
			e.errCode(t, "POST", "/admin/logout", a, nil, http.StatusUnauthorized)
			e.expect(t, "GET", "/admin/users", b, nil, http.StatusOK, nil)
		})
	}
}

// A wrong password is refused; five lock the name (even for the right password) until the
// lock passes, for known and unknown names alike; a password change ends sessions.
func TestAdminPasswordsAndLockout(t *testing.T) {
	for _, dialect := range adminDialects {
		t.Run(dialect, func(t *testing.T) {
			e := newAdminEnv(t, dialect, func(o *admin.UsersOptions) { o.MaxAddrFailures = 1000 })
			for _, name := range []string{adminName, "nobody"} {
				for i := 0; i < 4; i++ {
					if code, _ := e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": "wrong password!"},
						http.StatusUnauthorized); code != "invalid_credentials" {
						t.Fatalf("%s: code %q", name, code)
					}
				}
				if name == adminName {
					e.login(t, adminName, adminPassword) // a success restarts the count
					for i := 0; i < 4; i++ {
						e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": "wrong password!"}, http.StatusUnauthorized)
					}
				}
				e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": "wrong password!"}, http.StatusUnauthorized)
				_, body, h := e.do(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": adminPassword})
				if !strings.Contains(string(body), "too_many_failed_logins") || h.Get("Retry-After") == "" {
					t.Fatalf("%s: after 5 failures: %s (Retry-After %q)", name, body, h.Get("Retry-After"))
				}
			}
			// The lock is in the database: a second Users over the same store (another
			// replica, or a restart) sees it.
			e.clock.Advance(14 * time.Minute)
			e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": adminName, "password": adminPassword}, http.StatusTooManyRequests)
			e.clock.Advance(2 * time.Minute)
			tok := e.login(t, adminName, adminPassword)

			// A password change ends the user's sessions; the new password works, the old not.
			e.expect(t, "PUT", "/admin/users/root/password", tok, map[string]string{"password": "a brand new passphrase"}, http.StatusOK, nil)
			e.errCode(t, "GET", "/admin/users", tok, nil, http.StatusUnauthorized)
			e.errCode(t, "GET", "/admin/users", e.token, nil, http.StatusUnauthorized)
			e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": adminName, "password": adminPassword}, http.StatusUnauthorized)
			e.login(t, adminName, "a brand new passphrase")
		})
	}
}

// Failed sign-ins from one address are refused after MaxAddrFailures, whatever names
// they try.
func TestAdminAddressThrottle(t *testing.T) {
	e := newAdminEnv(t, "sqlite", func(o *admin.UsersOptions) { o.MaxAddrFailures = 3 })
	for i, name := range []string{"a1", "a2", "a3"} {
		_ = i
		e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": "wrong password!"}, http.StatusUnauthorized)
	}
	if code, _ := e.errCode(t, "POST", "/admin/login", "", map[string]string{"username": adminName, "password": adminPassword},
		http.StatusTooManyRequests); code != "too_many_failed_logins" {
		t.Fatalf("code %q", code)
	}
	e.clock.Advance(16 * time.Minute)
	e.login(t, adminName, adminPassword)
}

// Without Config.Admin the admin routes do not exist.
func TestAdminOff(t *testing.T) {
	store, _, _ := openStores(t, "sqlite")
	gw, err := loom.New(loom.Config{Store: store, Routes: []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{})}}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Shutdown(context.Background())
	for _, path := range []string{"/admin/login", "/admin/tenants"} {
		req := httptestRequest("POST", path, `{"username":"root","password":"x"}`)
		rec := recordServe(gw, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, rec.Code)
		}
	}
}
