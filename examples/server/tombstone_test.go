package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

// runWithEnv runs the CLI in-process with args and env, and returns its exit code, stdout
// and stderr.
func runWithEnv(env map[string]string, args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := cli(args, stdio{getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &errOut})
	return code, out.String(), errOut.String()
}

// ledgerStore is a store written as a server would: traces through the sink with the
// ledger, then a checkpoint round. env runs commands against it.
type ledgerStore struct {
	env   map[string]string
	exec  func(q string)
	sink  tracing.Sink
	round func()
}

func newLedgerStore(t *testing.T, dialect string) *ledgerStore {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	skey, _, err := ledger.GenerateKey("loom-ledger")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	s := &ledgerStore{env: map[string]string{"LOOM_DATA_DIR": dir}}
	var c *ledger.Checkpointer
	switch dialect {
	case ledger.SQLite:
		if err := os.WriteFile(filepath.Join(dir, "ledger.key"), []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		s.sink = tracing.NewSQLiteSink(db, ledger.AppendSQLite)
		s.exec = func(q string) {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		c = &ledger.Checkpointer{DB: db, Dialect: ledger.SQLite, Signer: signer, Exporter: ledger.DirExporter{Dir: filepath.Join(dir, "checkpoints")}}
	case ledger.Postgres:
		url := pgtest.New(t)
		s.env["DATABASE_URL"], s.env["LOOM_LEDGER_KEY"] = url, skey
		db, closeDB, err := openPostgresForTest(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeDB)
		if err := migrations.Up(ctx, db.sql, migrations.Postgres); err != nil {
			t.Fatal(err)
		}
		if s.sink, err = tracing.NewPostgresSink(ctx, db.pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{ledger.AppendPostgres}}); err != nil {
			t.Fatal(err)
		}
		s.exec = func(q string) {
			if _, err := db.sql.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		c = &ledger.Checkpointer{DB: db.sql, Dialect: ledger.Postgres, Signer: signer, Exporter: ledger.DirExporter{Dir: filepath.Join(dir, "checkpoints")}}
	}
	s.round = func() {
		if _, err := c.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *ledgerStore) write(t *testing.T, tenant string, at time.Time, n int) []string {
	t.Helper()
	var batch []*tracing.Trace
	var ids []string
	for i := range n {
		id, _ := uuid.NewV7()
		batch = append(batch, &tracing.Trace{ID: id.String(), CreatedAt: at.Add(time.Duration(i) * time.Second), TenantID: tenant,
			APIKeyID: "key-1", Model: "gpt-4o-mini", Provider: "openai", Status: 200, SealedRequest: []byte("sealed-q"), SealedResponse: []byte("sealed-a")})
		ids = append(ids, id.String())
	}
	if err := s.sink.WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestTombstoneCommand: on both stores, a month removed after "tombstone -month" (on
// PostgreSQL with -drop, which drops the partition) verifies; another month removed by hand
// fails verify, each missing row named.
func TestTombstoneCommand(t *testing.T) {
	oct, nov := time.Date(2026, 10, 3, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	for _, d := range []string{ledger.SQLite, ledger.Postgres} {
		t.Run(d, func(t *testing.T) {
			s := newLedgerStore(t, d)
			s.write(t, "acme", oct, 3)
			s.write(t, "beta", oct, 2)
			novIDs := s.write(t, "acme", nov, 2)
			s.round()

			args := []string{"tombstone", "-month", "2026-10"}
			if d == ledger.Postgres {
				args = append(args, "-drop")
			}
			code, out, errOut := runWithEnv(s.env, args...)
			if code != exitOK {
				t.Fatalf("tombstone: exit %d: %s", code, errOut)
			}
			for _, want := range []string{"sealed loom/acme/2026-10 at 3 leaves", "sealed loom/beta/2026-10 at 2 leaves", "root log signed at 6 events"} {
				if !strings.Contains(out, want) {
					t.Errorf("tombstone output lacks %q:\n%s", want, out)
				}
			}
			if d == ledger.Postgres {
				if !strings.Contains(out, "dropped partition traces_y2026m10") {
					t.Errorf("tombstone -drop output:\n%s", out)
				}
			} else {
				s.exec("DROP TRIGGER traces_no_delete")
				s.exec(fmt.Sprintf("DELETE FROM traces WHERE created_at < %d", nov.AddDate(0, 0, -2).UnixMicro()))
			}
			code, out, errOut = runWithEnv(s.env, "verify", "-deep")
			if code != exitOK || !strings.Contains(out, "ok: 2 traces in 3 logs") || !strings.Contains(out, "tombstoned") {
				t.Fatalf("verify after the tombstone: exit %d\n%s%s", code, out, errOut)
			}

			// November removed by hand, without a tombstone.
			if d == ledger.Postgres {
				s.exec("DROP TABLE traces_y2026m11")
			} else {
				s.exec(fmt.Sprintf("DELETE FROM traces WHERE created_at >= %d", nov.AddDate(0, 0, -2).UnixMicro()))
			}
			code, out, _ = runWithEnv(s.env, "verify")
			if code != exitError {
				t.Fatalf("verify passed a month removed by hand: exit %d\n%s", code, out)
			}
			for i, id := range novIDs {
				if want := fmt.Sprintf("FAIL \"acme\"/2026-11: row-deleted leaf %d trace %s", i, id); !strings.Contains(out, want) {
					t.Errorf("verify output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestTombstoneRefused: a tombstone command that cannot be right is refused before anything
// is recorded: exit 2 for a bad command line (no target, a month that is malformed, hostile
// or not yet over, a tenant id with NUL or invalid UTF-8, -drop without a whole month or
// without PostgreSQL), exit 1 when there is no key to sign it with.
func TestTombstoneRefused(t *testing.T) {
	now := time.Now().UTC()
	dir := t.TempDir()
	env := map[string]string{"LOOM_DATA_DIR": dir}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", nil, "give -month"},
		{"month 13", []string{"-month", "2026-13"}, "not a month"},
		{"short month", []string{"-month", "2026-1"}, "not a month"},
		{"markup", []string{"-month", "<script>alert(1)</script>"}, "not a month"},
		{"megabyte", []string{"-month", strings.Repeat("9", 1<<20)}, "not a month"},
		{"current month", []string{"-month", now.Format("2006-01")}, "not a past month"},
		{"next month", []string{"-month", now.AddDate(0, 1, 0).Format("2006-01")}, "not a past month"},
		{"NUL tenant", []string{"-tenant", "a\x00b"}, "not a tenant id"},
		{"invalid UTF-8 tenant", []string{"-tenant", "a\xffb"}, "not a tenant id"},
		{"drop a tenant", []string{"-tenant", "acme", "-drop"}, "-drop drops a whole month"},
		{"drop on SQLite", []string{"-month", "2020-01", "-drop"}, "-drop is for PostgreSQL"},
		{"argument", []string{"-month", "2020-01", "extra"}, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runWithEnv(env, append([]string{"tombstone"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
				t.Errorf("exit %d, stderr %.300q, stdout %.100q; want exit 2 with %q", code, errOut, out, tc.want)
			}
			if len(errOut) > 2000 {
				t.Errorf("stderr echoes the input: %d bytes", len(errOut))
			}
		})
	}
	code, _, errOut := runWithEnv(map[string]string{"DATABASE_URL": "postgres://127.0.0.1:5432/none"}, "tombstone", "-month", "2020-01")
	if code != exitError || !strings.Contains(errOut, "must be signed") {
		t.Errorf("PostgreSQL without LOOM_LEDGER_KEY: exit %d, %s", code, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused commands left files: %v", entries)
	}
}

// pgForTest is a pool and a database/sql handle on it.
type pgForTest struct {
	pool *pgxpool.Pool
	sql  *sql.DB
}

func openPostgresForTest(ctx context.Context, url string) (*pgForTest, func(), error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDBFromPool(pool)
	return &pgForTest{pool: pool, sql: db}, func() { db.Close(); pool.Close() }, nil
}
