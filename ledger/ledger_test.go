package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

// testStore is one real database with the ledger plugged into its sink.
type testStore struct {
	dialect string
	url     string        // PostgreSQL: the test database
	pool    *pgxpool.Pool // PostgreSQL
	db      *sql.DB
	sink    tracing.Sink // with the ledger
	plain   tracing.Sink // without: writes rows outside the ledger
}

func newTestStore(t testing.TB, dialect string) *testStore {
	t.Helper()
	ctx := t.Context()
	s := &testStore{dialect: dialect}
	switch dialect {
	case Postgres:
		s.url = pgtest.New(t)
		pool, err := pgxpool.New(ctx, s.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		s.pool = pool
		s.db = stdlib.OpenDBFromPool(pool)
		t.Cleanup(func() { s.db.Close() })
		if err := migrations.Up(ctx, s.db, migrations.Postgres); err != nil {
			t.Fatal(err)
		}
		mk := func(steps ...tracing.PostgresTxStep) tracing.Sink {
			sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: steps})
			if err != nil {
				t.Fatal(err)
			}
			return sink
		}
		s.sink, s.plain = mk(AppendPostgres), mk()
	case SQLite:
		db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		s.db = db
		s.sink, s.plain = tracing.NewSQLiteSink(db, AppendSQLite), tracing.NewSQLiteSink(db)
	}
	return s
}

// v1Sink writes traces with the ledger as Loom did before leaf version 2: the same append
// step, its leaves of LeafVersion1.
func (s *testStore) v1Sink(t testing.TB) tracing.Sink {
	if s.dialect == SQLite {
		return tracing.NewSQLiteSink(s.db, func(ctx context.Context, tx *sql.Tx, stored []*tracing.Trace) error {
			return appendSQLite(ctx, tx, stored, LeafVersion1)
		})
	}
	sink, err := tracing.NewPostgresSink(t.Context(), s.pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{
		func(ctx context.Context, tx pgx.Tx, stored []*tracing.Trace) error {
			return appendPostgres(ctx, tx, stored, LeafVersion1)
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return sink
}

func (s *testStore) exec(t testing.TB, q string) {
	t.Helper()
	if _, err := s.db.ExecContext(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// unlock turns the immutability triggers off, as an owner of the database could.
func (s *testStore) unlock(t *testing.T) {
	if s.dialect == Postgres {
		s.exec(t, "ALTER TABLE traces DISABLE TRIGGER USER")
		s.exec(t, "ALTER TABLE ledger_leaves DISABLE TRIGGER USER")
		s.exec(t, "ALTER TABLE ledger_root_events DISABLE TRIGGER USER")
		return
	}
	for _, tr := range []string{"traces_no_update", "traces_no_delete", "ledger_leaves_no_update", "ledger_leaves_no_delete",
		"ledger_root_events_no_update", "ledger_root_events_no_delete"} {
		s.exec(t, "DROP TRIGGER "+tr)
	}
}

func (s *testStore) write(t testing.TB, sink tracing.Sink, batch []*tracing.Trace) {
	t.Helper()
	if err := sink.WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
}

func testTraces(tenant string, at time.Time, n int) []*tracing.Trace {
	out := make([]*tracing.Trace, n)
	for i := range out {
		created := at.Add(time.Duration(i) * 1234567 * time.Nanosecond)
		id, _ := uuid.NewV7()
		cost := int64(100 + i)
		req, resp := make([]byte, 40+i), make([]byte, 80+i)
		rand.Read(req)
		rand.Read(resp)
		out[i] = &tracing.Trace{
			ID: id.String(), CreatedAt: created, TenantID: tenant, APIKeyID: fmt.Sprintf("key-%d", i%3),
			RequestID: "req-Ω-" + fmt.Sprint(i), Model: "openai/gpt-4o-mini", ServedModel: "gpt-4o-mini-2024-07-18",
			Provider: "openai", Stream: i%2 == 0, Status: []int{200, 429}[i%2], PromptTokens: int64(1000 + i),
			CompletionTokens: int64(200 + i), UsageSource: tracing.UsageReported, CostMicroUSD: []*int64{&cost, nil}[i%2],
			PriceVersion: "2026-01", LatencyUS: int64(1_500_000 + i), KeyVersion: 1, UpstreamRetries: i % 2,
			SealedRequest: req, SealedResponse: resp,
			// The columns of leaf version 2 only.
			FinishReasons: [][]string{{"stop"}, {"length", "tool_calls"}, nil}[i%3], UsageMethod: []string{"", "tiktoken/o200k_base"}[i%2],
			CacheWrite5mTokens: int64(10 * i), CacheWrite1hTokens: int64(20 + i), AudioPromptTokens: int64(i % 4),
			AudioCompletionTokens: int64(i % 5), AcceptedPredictionTokens: int64(i % 3), RejectedPredictionTokens: int64(i % 2),
			ServiceTier: []string{"default", "flex"}[i%2],
		}
		if i == 0 {
			out[i].SealedRequest = nil // no body: hashed as empty
		}
	}
	return out
}

// fixture is a store holding three logs, checkpointed, and the means to check it.
type fixture struct {
	*testStore
	a, b, w  []*tracing.Trace // acme/2026-11 (10 traces), acme/2026-10 (3), "we ird\n"/2026-11 (2)
	dir      string
	signer   note.Signer
	verifier note.Verifier
}

var (
	monthA = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	monthB = time.Date(2026, 10, 31, 23, 0, 0, 0, time.UTC)
	logA   = logName("acme", "2026-11")
	logB   = logName("acme", "2026-10")
	logW   = logName("we ird\n", "2026-11")
)

func newFixture(t *testing.T, dialect string) *fixture {
	f := emptyFixture(t, dialect)
	f.a, f.b, f.w = testTraces("acme", monthA, 10), testTraces("acme", monthB, 3), testTraces("we ird\n", monthA, 2)
	f.write(t, f.sink, append(append(append([]*tracing.Trace{}, f.a[:6]...), f.b...), f.w[0]))
	f.write(t, f.sink, append(append([]*tracing.Trace{}, f.w[1]), f.a[6:]...))
	f.checkpoint(t, f.signer)
	return f
}

// emptyFixture is a fixture with no traces and no checkpoint yet.
func emptyFixture(t *testing.T, dialect string) *fixture {
	f := &fixture{testStore: newTestStore(t, dialect), dir: t.TempDir()}
	skey, vkey, err := GenerateKey("loom-test")
	if err != nil {
		t.Fatal(err)
	}
	if f.signer, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	if f.verifier, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) checkpointer(signer note.Signer) *Checkpointer {
	return &Checkpointer{DB: f.db, Dialect: f.dialect, Signer: signer, Exporter: DirExporter{Dir: f.dir}}
}

// dropMonthB removes the traces of 2026-10 as retention does: on PostgreSQL its partition
// is dropped; SQLite has none, so its rows are deleted. The ledger's rows stay.
func (f *fixture) dropMonthB(t *testing.T) {
	if f.dialect == Postgres {
		f.exec(t, "DROP TABLE traces_y2026m10")
		return
	}
	f.unlock(t)
	f.exec(t, fmt.Sprintf("DELETE FROM traces WHERE created_at < %d", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMicro()))
}

func (f *fixture) checkpoint(t *testing.T, signer note.Signer) []Checkpoint {
	t.Helper()
	cps, err := f.checkpointer(signer).Once(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return cps
}

func (f *fixture) verify(t *testing.T, deep bool) *Report {
	t.Helper()
	files, err := ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(t.Context(), VerifyOptions{DB: f.db, Dialect: f.dialect, Verifier: f.verifier, Checkpoints: files, Deep: deep})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// found is the part of a failure a test pins down: what, where, which trace.
type found struct {
	Kind  string
	Log   string
	Index int64
	Trace string
}

func founds(rep *Report) []found {
	var out []found
	for _, f := range rep.Failures {
		log := f.Log
		if f.Kind == BadSignature {
			log = "" // a file name
		}
		out = append(out, found{f.Kind, log, f.LeafIndex, f.TraceID})
	}
	return out
}

var dialects = []string{Postgres, SQLite}

// TestLedgerClean: an untouched store verifies, normally and deep, with every log covered
// by its checkpoint; traces written after the checkpoint are reported as the unanchored tail.
func TestLedgerClean(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, d)
			tail := testTraces("acme", monthA.Add(time.Hour), 2)
			f.write(t, f.sink, tail)
			f.write(t, f.sink, tail) // offered again: stored once, one leaf each
			for _, deep := range []bool{false, true} {
				rep := f.verify(t, deep)
				if diff := cmp.Diff([]found(nil), founds(rep)); diff != "" {
					t.Errorf("deep=%v failures (-want +got):\n%s", deep, diff)
				}
				want := []LogStatus{
					{Log: logB, Leaves: 3, Checkpointed: 3},
					{Log: logA, Leaves: 12, Checkpointed: 10, Unanchored: 2},
					{Log: logW, Leaves: 2, Checkpointed: 2},
				}
				if diff := cmp.Diff(want, rep.Logs); diff != "" {
					t.Errorf("deep=%v logs (-want +got):\n%s", deep, diff)
				}
				if rep.Traces != 17 {
					t.Errorf("deep=%v read %d traces, want 17", deep, rep.Traces)
				}
			}
		})
	}
}

// TestTamperMatrix: each way an owner of the database could change the history is
// detected and named, on both stores.
func TestTamperMatrix(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, f *fixture) []found
	}{
		{"field edited", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("UPDATE traces SET prompt_tokens = 1 WHERE id = '%s'", f.a[3].ID))
			return []found{{RowEdited, logA, 3, f.a[3].ID}}
		}},
		{"retries edited", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("UPDATE traces SET upstream_retries = 0 WHERE id = '%s'", f.a[1].ID))
			return []found{{RowEdited, logA, 1, f.a[1].ID}}
		}},
		{"finish reasons edited", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			v := `'{stop}'`
			if f.dialect == SQLite {
				v = `'["stop"]'`
			}
			f.exec(t, fmt.Sprintf("UPDATE traces SET finish_reasons = %s WHERE id = '%s'", v, f.a[1].ID)) // was length, tool_calls
			return []found{{RowEdited, logA, 1, f.a[1].ID}}
		}},
		{"finish reasons made unreadable", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			v := `'{NULL}'`
			if f.dialect == SQLite {
				v = `'[null]'`
			}
			f.exec(t, fmt.Sprintf("UPDATE traces SET finish_reasons = %s WHERE id = '%s'", v, f.a[2].ID)) // was none
			return []found{{RowEdited, logA, 2, f.a[2].ID}}
		}},
		{"cache write tokens edited", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("UPDATE traces SET cache_write_1h_tokens = 0 WHERE id = '%s'", f.w[1].ID))
			return []found{{RowEdited, logW, 1, f.w[1].ID}}
		}},
		{"tenant moved", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("UPDATE traces SET tenant_id = 'other' WHERE id = '%s'", f.a[7].ID))
			return []found{{RowEdited, logName("other", "2026-11"), 7, f.a[7].ID}}
		}},
		{"ciphertext edited", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			junk := `'\x00ff'::bytea`
			if f.dialect == SQLite {
				junk = "X'00FF'"
			}
			f.exec(t, fmt.Sprintf("UPDATE traces SET response_sealed = %s WHERE id = '%s'", junk, f.a[4].ID))
			return []found{{BodyEdited, logA, 4, f.a[4].ID}}
		}},
		{"middle row deleted", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("DELETE FROM traces WHERE id = '%s'", f.a[5].ID))
			return []found{{RowDeleted, logA, 5, f.a[5].ID}}
		}},
		{"middle row deleted with its leaf", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("DELETE FROM traces WHERE id = '%s'", f.a[5].ID))
			f.exec(t, "DELETE FROM ledger_leaves WHERE tenant_id = 'acme' AND month = '2026-11' AND leaf_index = 5")
			return []found{
				{LeavesMissing, logA, 5, ""},
				{LogTruncated, logA, 9, ""},
				{BadHead, logA, -1, ""},
				{BadHead, logA, -1, ""},
			}
		}},
		{"last rows deleted and the head rewritten", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("DELETE FROM traces WHERE id IN ('%s', '%s')", f.a[8].ID, f.a[9].ID))
			f.exec(t, "DELETE FROM ledger_leaves WHERE tenant_id = 'acme' AND month = '2026-11' AND leaf_index >= 8")
			f.setHead(t, "acme", "2026-11", f.a[:8])
			return []found{{LogTruncated, logA, 8, ""}}
		}},
		{"two rows swapped", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			where := " WHERE tenant_id = 'acme' AND month = '2026-11' AND leaf_index = "
			f.exec(t, "UPDATE ledger_leaves SET leaf_index = -1"+where+"2")
			f.exec(t, "UPDATE ledger_leaves SET leaf_index = 2"+where+"6")
			f.exec(t, "UPDATE ledger_leaves SET leaf_index = 6"+where+"-1")
			return []found{{RootMismatch, logA, -1, ""}, {BadHead, logA, -1, ""}}
		}},
		{"row inserted", func(t *testing.T, f *fixture) []found {
			extra := testTraces("acme", monthA.Add(time.Minute), 1)
			f.write(t, f.plain, extra)
			return []found{{RowInserted, logA, -1, extra[0].ID}}
		}},
		{"month's log deleted", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			for _, tr := range f.b {
				f.exec(t, fmt.Sprintf("DELETE FROM traces WHERE id = '%s'", tr.ID))
			}
			f.exec(t, "DELETE FROM ledger_leaves WHERE month = '2026-10'")
			f.exec(t, "DELETE FROM ledger_logs WHERE month = '2026-10'")
			return []found{{LogDeleted, logB, -1, ""}}
		}},
		{"month dropped after its tombstone", func(t *testing.T, f *fixture) []found {
			if _, err := f.checkpointer(f.signer).Tombstone(t.Context(), "", "2026-10"); err != nil {
				t.Fatal(err)
			}
			f.dropMonthB(t)
			return nil
		}},
		{"tenant's traces removed after its tombstone", func(t *testing.T, f *fixture) []found {
			if _, err := f.checkpointer(f.signer).Tombstone(t.Context(), "we ird\n", ""); err != nil {
				t.Fatal(err)
			}
			f.unlock(t)
			f.exec(t, "DELETE FROM traces WHERE tenant_id <> 'acme'")
			return nil
		}},
		{"appended after its tombstone", func(t *testing.T, f *fixture) []found {
			if _, err := f.checkpointer(f.signer).Tombstone(t.Context(), "acme", "2026-10"); err != nil {
				t.Fatal(err)
			}
			late := testTraces("acme", monthB.Add(time.Minute), 1)
			f.write(t, f.sink, late)
			return []found{{AfterTombstone, logB, 3, late[0].ID}}
		}},
		{"month dropped without a tombstone", func(t *testing.T, f *fixture) []found {
			f.dropMonthB(t)
			return []found{
				{RowDeleted, logB, 0, f.b[0].ID},
				{RowDeleted, logB, 1, f.b[1].ID},
				{RowDeleted, logB, 2, f.b[2].ID},
			}
		}},
		{"root event rewritten with its hash", func(t *testing.T, f *fixture) []found {
			f.unlock(t)
			e := RootEvent{Kind: EventLog, TenantID: "acme", Month: "2026-11", Size: 9, Root: make([]byte, 32)}
			q := "UPDATE ledger_root_events SET size = $1, root = $2, at_us = 0, leaf_hash = $3 WHERE event_index = 1"
			if f.dialect == SQLite {
				q = "UPDATE ledger_root_events SET size = ?, root = ?, at_us = 0, leaf_hash = ? WHERE event_index = 1"
			}
			if _, err := f.db.ExecContext(t.Context(), q, 9, e.Root, e.Hash()); err != nil {
				t.Fatal(err)
			}
			return []found{{RootMismatch, RootLogName, -1, ""}, {BadHead, RootLogName, -1, ""}, {RootMismatch, logA, -1, ""}}
		}},
		{"whole database rewritten consistently", func(t *testing.T, f *fixture) []found {
			f.rewrite(t)
			return []found{{RootMismatch, RootLogName, -1, ""}, {RootMismatch, logA, -1, ""}}
		}},
		{"whole database rewritten and re-signed", func(t *testing.T, f *fixture) []found {
			f.rewrite(t)
			skey, _, err := GenerateKey("loom-test") // same name, another key
			if err != nil {
				t.Fatal(err)
			}
			forger, err := note.NewSigner(skey)
			if err != nil {
				t.Fatal(err)
			}
			f.dir = t.TempDir() // the exported checkpoints replaced by forged ones
			f.checkpoint(t, forger)
			return []found{{BadSignature, "", -1, ""}, {BadSignature, "", -1, ""}, {BadSignature, "", -1, ""}, {BadSignature, "", -1, ""}}
		}},
	} {
		for _, d := range dialects {
			t.Run(tc.name+"/"+d, func(t *testing.T) {
				f := newFixture(t, d)
				want := tc.tamper(t, f)
				rep := f.verify(t, true)
				if diff := cmp.Diff(want, founds(rep)); diff != "" {
					t.Errorf("failures (-want +got):\n%s", diff)
				}
				for _, fl := range rep.Failures {
					t.Log(fl)
				}
			})
		}
	}
}

// setHead rewrites a log's head to cover exactly traces, as a careful forger would.
func (f *fixture) setHead(t *testing.T, tenant, month string, traces []*tracing.Trace) {
	t.Helper()
	idf := sqliteID
	if f.dialect == Postgres {
		idf = pgID
	}
	logs, err := groupBatch(traces, idf, LeafVersion)
	if err != nil {
		t.Fatal(err)
	}
	rng, root, err := logs[0].extend(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := "UPDATE ledger_logs SET size = $1, range_hashes = $2, root = $3 WHERE tenant_id = $4 AND month = $5"
	if f.dialect == SQLite {
		q = "UPDATE ledger_logs SET size = ?, range_hashes = ?, root = ? WHERE tenant_id = ? AND month = ?"
	}
	if _, err := f.db.ExecContext(t.Context(), q, len(traces), rng, root, tenant, month); err != nil {
		t.Fatal(err)
	}
}

// rewrite replaces every trace and the whole ledger, root log included, with a consistent
// history in which one trace of acme/2026-11 says something else.
func (f *fixture) rewrite(t *testing.T) {
	f.unlock(t)
	f.exec(t, "DELETE FROM traces")
	f.exec(t, "DELETE FROM ledger_leaves")
	f.exec(t, "DELETE FROM ledger_logs")
	f.exec(t, "DELETE FROM ledger_root_events")
	f.exec(t, "DELETE FROM ledger_root")
	f.exec(t, "INSERT INTO ledger_root (id) VALUES (1)")
	defer func() { // the root log rebuilt as a checkpoint round would, without the key
		if err := recordLogs(t.Context(), f.db, f.dialect == Postgres, time.Now()); err != nil {
			t.Fatal(err)
		}
	}()
	forged := *f.a[2]
	forged.CompletionTokens = 1
	all := append(append(append([]*tracing.Trace{}, f.a[:2]...), &forged), f.a[3:]...)
	f.write(t, f.sink, append(append(all, f.b...), f.w...))
}
