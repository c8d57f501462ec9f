package loom_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// adminEnv is a gateway with the admin API on, over a real store of one dialect, served
// on loopback, with one admin user signed in.
type adminEnv struct {
	dialect string
	gw      *loom.Gateway
	srv     *httptest.Server
	users   *admin.Users
	db      *sql.DB // the same database, for checks of raw rows
	clock   *adminClock
	token   string
	spend   *fakeSpender
}

const (
	adminName     = "root"
	adminPassword = "correct horse battery staple"
)

// adminClock is the real clock moved forward by what a test adds.
type adminClock struct{ offset atomic.Int64 }

func (c *adminClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *adminClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

var adminDialects = []string{migrations.SQLite, migrations.Postgres}

// openStores opens a fresh database of the dialect with every migration applied.
func openStores(t testing.TB, dialect string) (tenancy.Store, admin.Store, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	if dialect == migrations.SQLite {
		db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		return tenancy.NewSQLiteStore(db).WithDeleteSteps(tracing.DeleteTenantTracesSQLite), admin.NewSQLiteStore(db), db
	}
	pool, err := pgxpool.New(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		t.Fatal(err)
	}
	return tenancy.NewPostgresStore(pool).WithDeleteSteps(tracing.DeleteTenantTracesPostgres), admin.NewPostgresStore(pool), db
}

// fastParams keep tests quick; the benchmark and the rehash test use real ones.
var fastParams = admin.Params{Memory: 64, Time: 1, Threads: 1}

func newAdminEnv(t testing.TB, dialect string, modify ...func(*admin.UsersOptions)) *adminEnv {
	t.Helper()
	ctx := context.Background()
	store, astore, db := openStores(t, dialect)
	e := &adminEnv{dialect: dialect, db: db, clock: &adminClock{}, spend: &fakeSpender{}}
	uo := admin.UsersOptions{Store: astore, Params: fastParams, Now: e.clock.Now}
	for _, m := range modify {
		m(&uo)
	}
	var err error
	if e.users, err = admin.NewUsers(uo); err != nil {
		t.Fatal(err)
	}
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	ac := &loom.AdminConfig{Users: e.users, Spend: e.spend}
	e.gw, err = loom.New(loom.Config{
		Store:   store,
		Keyring: keyring,
		Routes:  []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Admin:   ac,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.gw)
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.gw.Shutdown(ctx)
	})
	if _, err := e.users.CreateUser(ctx, adminName, adminPassword); err != nil {
		t.Fatal(err)
	}
	e.token = e.login(t, adminName, adminPassword)
	return e
}

// login signs in and returns the token.
func (e *adminEnv) login(t testing.TB, name, password string) string {
	t.Helper()
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	e.expect(t, "POST", "/admin/login", "", map[string]string{"username": name, "password": password}, http.StatusOK, &out)
	if !strings.HasPrefix(out.Token, admin.TokenPrefix) || out.ExpiresAt.IsZero() {
		t.Fatalf("login answer: %+v", out)
	}
	return out.Token
}

// do sends a request with the token (none if empty); body is JSON-encoded unless it is
// a string or []byte, sent as is.
func (e *adminEnv) do(t testing.TB, method, path, token string, body any) (int, []byte, http.Header) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// expect sends a request and checks its status, decoding the answer into out (if not
// nil). An error answer must be OpenAI-style JSON.
func (e *adminEnv) expect(t testing.TB, method, path, token string, body any, status int, out any) []byte {
	t.Helper()
	got, b, _ := e.do(t, method, path, token, body)
	if got != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, b)
	}
	if status >= 400 {
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" {
			t.Fatalf("%s %s: not an OpenAI error body: %s", method, path, b)
		}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return b
}

// errCode sends a request that must fail with the status, and returns the error's code.
func (e *adminEnv) errCode(t testing.TB, method, path, token string, body any, status int) (code, param string) {
	t.Helper()
	var eb errorBody
	e.expect(t, method, path, token, body, status, &eb)
	if eb.Error.Code != nil {
		code = *eb.Error.Code
	}
	if eb.Error.Param != nil {
		param = *eb.Error.Param
	}
	return code, param
}

// fakeSpender stands in for the analytics rollups: it returns its rows and keeps the
// query it was asked.
type fakeSpender struct {
	mu   sync.Mutex
	rows []analytics.SpendRow
	got  []analytics.SpendQuery
}

func (f *fakeSpender) Spend(ctx context.Context, q analytics.SpendQuery) ([]analytics.SpendRow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, q)
	return f.rows, nil
}

func httptestRequest(method, path, body string) *http.Request {
	return httptest.NewRequest(method, path, strings.NewReader(body))
}

func recordServe(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func mustUsers(t *testing.T, s admin.Store) *admin.Users {
	t.Helper()
	u, err := admin.NewUsers(admin.UsersOptions{Store: s, Params: fastParams})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
