package admin

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
)

// newStore is a fresh Store of the dialect with the migrations applied.
func newStore(tb testing.TB, dialect string) Store {
	tb.Helper()
	ctx := context.Background()
	if dialect == migrations.SQLite {
		db, err := sqlitedb.Open(ctx, filepath.Join(tb.TempDir(), "loom.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			tb.Fatal(err)
		}
		return NewSQLiteStore(db)
	}
	pool, err := pgxpool.New(ctx, pgtest.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		tb.Fatal(err)
	}
	return NewPostgresStore(pool)
}

var dialects = []string{migrations.SQLite, migrations.Postgres}

// Two removals racing for the last two users: exactly one wins, every time.
func TestStoreLastUserRace(t *testing.T) {
	ctx := context.Background()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			s := newStore(t, d)
			if err := s.DeleteUser(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("delete unknown: %v", err)
			}
			for round := 0; round < 15; round++ {
				for _, n := range []string{"a", "b"} {
					if err := s.CreateUser(ctx, User{Name: n, PasswordHash: "h"}); err != nil && !errors.Is(err, ErrConflict) {
						t.Fatal(err)
					}
				}
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i, n := range []string{"a", "b"} {
					wg.Add(1)
					go func() { defer wg.Done(); errs[i] = s.DeleteUser(ctx, n) }()
				}
				wg.Wait()
				ok, last := 0, 0
				for _, err := range errs {
					switch {
					case err == nil:
						ok++
					case errors.Is(err, ErrLastUser):
						last++
					default:
						t.Fatalf("round %d: %v", round, err)
					}
				}
				if n, _ := s.CountUsers(ctx); ok != 1 || last != 1 || n != 1 {
					t.Fatalf("round %d: %d removed, %d refused, %d left; want 1, 1, 1", round, ok, last, n)
				}
			}
			if err := s.CreateUser(ctx, User{Name: "a", PasswordHash: "h"}); err != nil && !errors.Is(err, ErrConflict) {
				t.Fatal(err)
			}
			if err := s.CreateUser(ctx, User{Name: "a", PasswordHash: "h"}); !errors.Is(err, ErrConflict) {
				t.Fatalf("duplicate: %v", err)
			}
		})
	}
}

// Failures count within the window, lock at the maximum, restart after the window, and
// concurrent failures all count.
func TestStoreFailures(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			s := newStore(t, d)
			rec := func(at time.Time) Failures {
				f, err := s.RecordFailure(ctx, "u", at, 15*time.Minute, 5, 10*time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return f
			}
			for i := 1; i <= 4; i++ {
				if f := rec(t0.Add(time.Duration(i) * time.Minute)); f.Count != i || !f.LockedUntil.IsZero() {
					t.Fatalf("failure %d: %+v", i, f)
				}
			}
			f := rec(t0.Add(5 * time.Minute))
			if want := t0.Add(15 * time.Minute); !f.LockedUntil.Equal(want) {
				t.Fatalf("fifth failure: %+v, want locked until %v", f, want)
			}
			if got, _ := s.GetFailures(ctx, "u"); !got.LockedUntil.Equal(f.LockedUntil) {
				t.Fatalf("stored %+v", got)
			}
			if f := rec(t0.Add(40 * time.Minute)); f.Count != 1 {
				t.Fatalf("after the window: %+v", f)
			}
			if err := s.ClearFailures(ctx, "u", t0); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.GetFailures(ctx, "u"); got != (Failures{}) {
				t.Fatalf("after clear: %+v", got)
			}
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := s.RecordFailure(ctx, "v", t0, time.Hour, 100, time.Minute); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if got, _ := s.GetFailures(ctx, "v"); got.Count != 8 {
				t.Fatalf("8 concurrent failures counted as %d", got.Count)
			}
		})
	}
}

// A hash made with lower parameters is replaced at sign-in; sessions end with their user.
func TestRehashAndSessions(t *testing.T) {
	ctx := context.Background()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			s := newStore(t, d)
			old, err := NewUsers(UsersOptions{Store: s, Params: testParams})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.CreateUser(ctx, "root", "root password!"); err != nil {
				t.Fatal(err)
			}
			if _, err := old.CreateUser(ctx, "other", "other password"); err != nil {
				t.Fatal(err)
			}
			raised := Params{Memory: 128, Time: 2, Threads: 1}
			cur, err := NewUsers(UsersOptions{Store: s, Params: raised})
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := cur.Login(ctx, "root", "root password!", "a")
			if err != nil {
				t.Fatal(err)
			}
			u, _ := s.GetUser(ctx, "root")
			if !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=128,t=2,p=1$") {
				t.Fatalf("not rehashed: %s", u.PasswordHash)
			}
			if _, err := cur.Authenticate(ctx, tok); err != nil {
				t.Fatalf("the session of the rehashing sign-in: %v", err)
			}
			if _, _, err := cur.Login(ctx, "root", "root password!", "a"); err != nil {
				t.Fatalf("sign-in after rehash: %v", err)
			}
			if err := cur.DeleteUser(ctx, "root"); err != nil {
				t.Fatal(err)
			}
			if _, err := cur.Authenticate(ctx, tok); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("a removed user's token: %v", err)
			}
		})
	}
}

// Bootstrap makes the first user once.
func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	u, err := NewUsers(UsersOptions{Store: newStore(t, migrations.SQLite), Params: testParams})
	if err != nil {
		t.Fatal(err)
	}
	pw, created, err := u.Bootstrap(ctx, "admin", "")
	if err != nil || !created || len(pw) < MinPasswordLen {
		t.Fatalf("first: %q %v %v", pw, created, err)
	}
	if _, _, err := u.Login(ctx, "admin", pw, "x"); err != nil {
		t.Fatal(err)
	}
	if pw2, created, err := u.Bootstrap(ctx, "admin2", "given password"); err != nil || created || pw2 != "" {
		t.Fatalf("second: %q %v %v", pw2, created, err)
	}
}

// Sign-ins wait for a free argon2id slot; one that cannot get one before its context ends
// fails with the context's error and counts no failure.
func TestLoginWaitsForHashSlot(t *testing.T) {
	s := newStore(t, migrations.SQLite)
	u, err := NewUsers(UsersOptions{Store: s, Params: testParams, MaxConcurrentHashes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.CreateUser(context.Background(), "root", "root password!"); err != nil {
		t.Fatal(err)
	}
	u.slots <- struct{}{} // every slot busy
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := u.Login(ctx, "root", "wrong password", "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("login with no slot: %v", err)
	}
	if f, _ := s.GetFailures(context.Background(), "root"); f.Count != 0 {
		t.Fatalf("a sign-in that never ran counted as a failure: %+v", f)
	}
	<-u.slots
	if _, _, err := u.Login(context.Background(), "root", "root password!", "a"); err != nil {
		t.Fatal(err)
	}
}
