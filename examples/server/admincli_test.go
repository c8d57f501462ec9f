package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
)

// The admin command works on both stores with no server running: tenants, keys and admin
// users, each change audited as "cli" without a secret.
func TestAdminCLI(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{}
			if dialect == "postgres" {
				env["DATABASE_URL"] = pgtest.New(t)
			}
			run := func(t *testing.T, stdin string, args ...string) (int, string, string) {
				t.Helper()
				var out, errb bytes.Buffer
				code := cli(append(append([]string{"admin"}, args...), "-data", dir), stdio{
					getenv: func(k string) string { return env[k] }, stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb})
				return code, out.String(), errb.String()
			}
			must := func(t *testing.T, args ...string) string {
				t.Helper()
				code, out, errs := run(t, "", args...)
				if code != exitOK {
					t.Fatalf("admin %v: exit %d: %s%s", args, code, out, errs)
				}
				return out
			}
			uuidRE := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f-]{27}`)

			out := must(t, "tenants", "create", "-name", "acme")
			tenantID := uuidRE.FindString(out)
			if tenantID == "" {
				t.Fatalf("no tenant id in %q", out)
			}
			if out := must(t, "tenants", "list"); !strings.Contains(out, tenantID) || !strings.Contains(out, `"acme"`) {
				t.Fatalf("tenants list: %s", out)
			}
			out = must(t, "keys", "create", "-tenant", tenantID, "-name", "ci")
			rawKey := regexp.MustCompile(`loom_[0-9A-Za-z]{43}`).FindString(out)
			keyID := uuidRE.FindString(out)
			if rawKey == "" || keyID == "" {
				t.Fatalf("keys create: %s", out)
			}
			if out := must(t, "keys", "list", "-tenant", tenantID); !strings.Contains(out, keyID) || strings.Contains(out, rawKey) {
				t.Fatalf("keys list: %s", out)
			}
			must(t, "keys", "revoke", "-tenant", tenantID, "-key", keyID)

			out = must(t, "users", "create", "-username", "ops")
			generated := strings.TrimSpace(out[strings.LastIndex(out, "keep it):")+len("keep it):"):])
			env["LOOM_ADMIN_PASSWORD"] = "second password here"
			must(t, "users", "create", "-username", "dev")
			if out := must(t, "users", "list"); !strings.Contains(out, "ops") || !strings.Contains(out, "dev") {
				t.Fatalf("users list: %s", out)
			}
			env["LOOM_ADMIN_PASSWORD"] = "reset password here"
			if out := must(t, "users", "reset-password", "-username", "dev"); strings.Contains(out, "reset password here") {
				t.Fatalf("a given password was echoed: %s", out)
			}
			must(t, "users", "remove", "-username", "ops")
			if code, _, errs := run(t, "", "users", "remove", "-username", "dev"); code != exitError || !strings.Contains(errs, "last admin user") {
				t.Fatalf("removing the last user: exit %d: %s", code, errs)
			}
			if code, _, _ := run(t, "", "keys", "create", "-tenant", tenantID); code != exitUsage {
				t.Fatalf("missing -name: exit %d", code)
			}

			// Hard delete asks for the id; a wrong answer deletes nothing.
			if code, out, errs := run(t, "not-the-id\n", "tenants", "delete", "-tenant", tenantID); code != exitError ||
				!strings.Contains(out, "Type the tenant id") || !strings.Contains(errs, "not confirmed") {
				t.Fatalf("unconfirmed delete: exit %d: %s%s", code, out, errs)
			}
			if out := must(t, "tenants", "list"); !strings.Contains(out, tenantID) {
				t.Fatal("an unconfirmed delete removed the tenant")
			}

			// The typed id deletes.
			t2 := uuidRE.FindString(must(t, "tenants", "create", "-name", "doomed"))
			if code, out, errs := run(t, t2+"\n", "tenants", "delete", "-tenant", t2); code != exitOK {
				t.Fatalf("confirmed delete: exit %d: %s%s", code, out, errs)
			} else if list := must(t, "tenants", "list"); strings.Contains(list, t2) || !strings.Contains(out, "deleted tenant") {
				t.Fatalf("confirmed delete: %s / %s", out, list)
			}

			// What the commands left in the store.
			ts, as, db := openTestStores(t, dialect, dir, env["DATABASE_URL"])
			k, _, err := ts.LookupKey(context.Background(), tenancy.HashKey(rawKey))
			if err != nil || k.Status != tenancy.KeyRevoked {
				t.Fatalf("key after revoke: %+v %v", k, err)
			}
			users, err := admin.NewUsers(admin.UsersOptions{Store: as})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := users.Login(context.Background(), "dev", "reset password here", "test"); err != nil {
				t.Fatalf("login with the reset password: %v", err)
			}
			if _, _, err := users.Login(context.Background(), "ops", generated, "test"); err == nil {
				t.Fatal("a removed user signed in")
			}
			var actions []string
			rows, err := db.Query(`SELECT actor, action, target, client_addr, detail FROM admin_audit ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var all strings.Builder
			for rows.Next() {
				var actor, action, target, addr, detail string
				if err := rows.Scan(&actor, &action, &target, &addr, &detail); err != nil {
					t.Fatal(err)
				}
				if actor == "cli" {
					actions = append(actions, action)
				}
				all.WriteString(actor + action + target + addr + detail)
			}
			want := "tenant.create key.create key.revoke user.create user.create user.password user.delete tenant.create tenant.delete"
			if got := strings.Join(actions, " "); got != want {
				t.Errorf("cli audit actions %q, want %q", got, want)
			}
			for _, secret := range []string{rawKey, generated, "second password here", "reset password here"} {
				if strings.Contains(all.String(), secret) {
					t.Errorf("the audit log holds a secret %q", secret)
				}
			}
		})
	}
}

// openTestStores opens what the CLI wrote, once it has released the store.
func openTestStores(t *testing.T, dialect, dir, url string) (tenancy.Store, admin.Store, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	if dialect == "sqlite" {
		db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return tenancy.NewSQLiteStore(db), admin.NewSQLiteStore(db), db
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close() })
	return tenancy.NewPostgresStore(pool), admin.NewPostgresStore(pool), db
}

// The standalone server makes the first admin user: a generated password printed once on
// stdout and never logged, or LOOM_ADMIN_USERNAME/LOOM_ADMIN_PASSWORD, not echoed; the admin
// API answers at /admin/.
func TestServerFirstAdmin(t *testing.T) {
	login := func(t *testing.T, addr, name, pw string) int {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"username": name, "password": pw})
		resp, err := http.Post("http://"+addr+"/admin/login", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("generated", func(t *testing.T) {
		dir := t.TempDir()
		cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s, logs, closeServer := startServer(t, cfg, &out)
		m := regexp.MustCompile(`Loom admin user "admin", password \(shown once, keep it\):\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no admin password printed:\n%s", out.String())
		}
		if strings.Contains(logs.String(), m[1]) {
			t.Fatal("the admin password is in the log")
		}
		if got := login(t, s.Addr, "admin", m[1]); got != http.StatusOK {
			t.Fatalf("login: %d", got)
		}
		closeServer()
		// A restart keeps the user and prints no new password.
		out.Reset()
		s2, _, _ := startServer(t, cfg, &out)
		if strings.Contains(out.String(), "admin user") {
			t.Fatalf("a restart printed a password again:\n%s", out.String())
		}
		if got := login(t, s2.Addr, "admin", m[1]); got != http.StatusOK {
			t.Fatalf("login after restart: %d", got)
		}
	})
	t.Run("from the environment", func(t *testing.T) {
		env := map[string]string{"LOOM_ADMIN_USERNAME": "ops", "LOOM_ADMIN_PASSWORD": "from the environment"}
		cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s, logs, _ := startServer(t, cfg, &out)
		if strings.Contains(out.String()+logs.String(), "from the environment") {
			t.Fatal("the given admin password was echoed")
		}
		if got := login(t, s.Addr, "ops", "from the environment"); got != http.StatusOK {
			t.Fatalf("login: %d", got)
		}
		if got := login(t, s.Addr, "ops", "wrong password!!"); got != http.StatusUnauthorized {
			t.Fatalf("wrong password: %d", got)
		}
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, env := range []map[string]string{{"LOOM_ADMIN_USERNAME": "bad name<"}, {"LOOM_ADMIN_PASSWORD": "short"}} {
			if _, err := parseConfig([]string{"-data", t.TempDir()}, func(k string) string { return env[k] }); err == nil {
				t.Errorf("%v accepted", env)
			}
		}
	})
}
