package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// rootEvents is the stored root log, without the times.
func (f *fixture) rootEvents(t *testing.T) []RootEvent {
	t.Helper()
	rows, err := f.db.QueryContext(t.Context(), "SELECT kind, tenant_id, month, size FROM ledger_root_events ORDER BY event_index")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []RootEvent
	for rows.Next() {
		var e RootEvent
		var size int64
		if err := rows.Scan(&e.Kind, &e.TenantID, &e.Month, &size); err != nil {
			t.Fatal(err)
		}
		e.Size = uint64(size)
		out = append(out, e)
	}
	return out
}

// TestRootLog: each checkpoint round records every grown tenant log's size and root in the
// root log and signs it (a C2SP checkpoint under loom/root); with every tenant checkpoint
// withheld, the root log alone still anchors the tenant logs and catches a truncation; an
// edited or deleted root event is named.
func TestRootLog(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, d)
			f.write(t, f.sink, testTraces("acme", monthA.Add(time.Hour), 2))
			f.checkpoint(t, f.signer)
			want := []RootEvent{
				{Kind: EventLog, TenantID: "acme", Month: "2026-10", Size: 3},
				{Kind: EventLog, TenantID: "acme", Month: "2026-11", Size: 10},
				{Kind: EventLog, TenantID: "we ird\n", Month: "2026-11", Size: 2},
				{Kind: EventLog, TenantID: "acme", Month: "2026-11", Size: 12},
			}
			if diff := cmp.Diff(want, f.rootEvents(t)); diff != "" {
				t.Errorf("root log (-want +got):\n%s", diff)
			}
			rootNotes, _ := filepath.Glob(filepath.Join(f.dir, "loom%2Froot", "*.note"))
			if len(rootNotes) != 2 {
				t.Fatalf("root checkpoints %v, want two", rootNotes)
			}
			b, _ := os.ReadFile(rootNotes[1])
			n, err := note.Open(b, note.VerifierList(f.verifier))
			if err != nil {
				t.Fatal(err)
			}
			if origin, size, _, _, err := parseCheckpoint(n.Text); err != nil || origin != "loom/root" || size != 4 {
				t.Errorf("root checkpoint %q: %v", n.Text, err)
			}
			rep := f.verify(t, false)
			if !rep.OK() || rep.Root != (LogStatus{Log: RootLogName, Leaves: 4, Checkpointed: 4}) {
				t.Fatalf("clean: failures %v, root %+v", rep.Failures, rep.Root)
			}

			// Every tenant checkpoint withheld: the signed root log still covers the logs.
			for _, l := range []string{"loom%2Facme%2F2026-10", "loom%2Facme%2F2026-11", "loom%2Fwe%2520ird%250A%2F2026-11"} {
				if err := os.RemoveAll(filepath.Join(f.dir, l)); err != nil {
					t.Fatal(err)
				}
			}
			rep = f.verify(t, false)
			if !rep.OK() || rep.Logs[1] != (LogStatus{Log: logA, Leaves: 12, Checkpointed: 12}) {
				t.Fatalf("root checkpoints only: failures %v, logs %+v", rep.Failures, rep.Logs)
			}
			f.unlock(t)
			f.exec(t, "DELETE FROM ledger_leaves WHERE tenant_id = 'acme' AND month = '2026-11' AND leaf_index >= 11")
			f.exec(t, "DELETE FROM traces WHERE id = '"+f.lastA(t)+"'")
			f.setHeadFromLeaves(t, "acme", "2026-11")
			f.exec(t, "UPDATE ledger_root_events SET size = 5 WHERE event_index = 2")
			rep = f.verify(t, false)
			wantF := []found{
				{RowEdited, RootLogName, 2, ""},
				{LogTruncated, logA, 11, ""},
			}
			if diff := cmp.Diff(wantF, founds(rep)); diff != "" {
				t.Errorf("failures (-want +got):\n%s", diff)
			}
			for _, fl := range rep.Failures {
				t.Log(fl)
			}
		})
	}
}

// lastA is the id of the last trace of acme/2026-11.
func (f *fixture) lastA(t *testing.T) string {
	t.Helper()
	var id string
	q := "SELECT id FROM traces WHERE tenant_id = 'acme' ORDER BY created_at DESC LIMIT 1"
	if err := f.db.QueryRowContext(t.Context(), q).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// setHeadFromLeaves rewrites a log's head to match its stored leaves, as a careful forger
// would after deleting some.
func (f *fixture) setHeadFromLeaves(t *testing.T, tenant, month string) {
	t.Helper()
	leaves, err := logLeaves(t.Context(), VerifyOptions{DB: f.db, Dialect: f.dialect}, tenant, month)
	if err != nil {
		t.Fatal(err)
	}
	rng, root, err := extendRange(0, nil, leaves)
	if err != nil {
		t.Fatal(err)
	}
	q := "UPDATE ledger_logs SET size = $1, range_hashes = $2, root = $3 WHERE tenant_id = $4 AND month = $5"
	if f.dialect == SQLite {
		q = "UPDATE ledger_logs SET size = ?, range_hashes = ?, root = ? WHERE tenant_id = ? AND month = ?"
	}
	if _, err := f.db.ExecContext(t.Context(), q, len(leaves), rng, root, tenant, month); err != nil {
		t.Fatal(err)
	}
}

// deleteTenant is a hard delete as the tenancy store runs it: in one transaction, the
// ledger's record (when record is set) and the removal of the tenant's traces.
func (f *fixture) deleteTenant(t *testing.T, tenant string, record bool, commit bool) error {
	t.Helper()
	ctx := t.Context()
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if f.dialect == Postgres {
		pool, err := pgxpool.New(ctx, f.url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if record {
			if err := RecordTenantDeletionPostgres(ctx, tx, tenant, at); err != nil {
				return err
			}
		}
		for _, q := range []string{"ALTER TABLE traces DISABLE TRIGGER USER", "DELETE FROM traces WHERE tenant_id = $1", "ALTER TABLE traces ENABLE TRIGGER USER"} {
			var args []any
			if q[0] == 'D' {
				args = []any{tenant}
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		if !commit {
			return tx.Rollback(ctx)
		}
		return tx.Commit(ctx)
	}
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if record {
		if err := RecordTenantDeletionSQLite(ctx, tx, tenant, at); err != nil {
			return err
		}
	}
	for _, q := range []string{"DROP TRIGGER traces_no_delete", "DELETE FROM traces WHERE tenant_id = ?",
		"CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces BEGIN SELECT RAISE(ABORT, 'traces are immutable'); END"} {
		var args []any
		if q[0] == 'D' && q[1] == 'E' {
			args = []any{tenant}
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// TestTenantDeletion: a hard delete that records itself with RecordTenantDeletion* in its
// own transaction verifies (the tenant's logs sealed and removed, the rest untouched), at
// once as the root log's unanchored tail and after the next round under its signature; a
// rolled-back delete leaves no event; a trace appended to a deleted tenant's log is named;
// the same delete without the record fails verification, row by row.
func TestTenantDeletion(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, d)
			if err := f.deleteTenant(t, "acme", true, false); err != nil {
				t.Fatal(err)
			}
			if got := len(f.rootEvents(t)); got != 3 {
				t.Fatalf("a rolled-back delete left root events: %d, want 3", got)
			}
			if err := f.deleteTenant(t, "acme", true, true); err != nil {
				t.Fatal(err)
			}
			want := []RootEvent{
				{Kind: EventLog, TenantID: "acme", Month: "2026-10", Size: 3},
				{Kind: EventLog, TenantID: "acme", Month: "2026-11", Size: 10},
				{Kind: EventLog, TenantID: "we ird\n", Month: "2026-11", Size: 2},
				{Kind: EventSeal, TenantID: "acme", Month: "2026-10", Size: 3},
				{Kind: EventSeal, TenantID: "acme", Month: "2026-11", Size: 10},
				{Kind: EventTenantDeletion, TenantID: "acme"},
			}
			if diff := cmp.Diff(want, f.rootEvents(t)); diff != "" {
				t.Errorf("root log (-want +got):\n%s", diff)
			}
			rep := f.verify(t, true)
			if !rep.OK() || rep.Root.Unanchored != 3 || !rep.Logs[0].Tombstoned || !rep.Logs[1].Tombstoned || rep.Logs[2].Tombstoned || rep.Traces != 2 {
				t.Fatalf("after the delete: failures %v, root %+v, logs %+v, %d traces", rep.Failures, rep.Root, rep.Logs, rep.Traces)
			}
			f.checkpoint(t, f.signer)
			if rep := f.verify(t, true); !rep.OK() || rep.Root != (LogStatus{Log: RootLogName, Leaves: 6, Checkpointed: 6}) {
				t.Fatalf("after the next round: failures %v, root %+v", rep.Failures, rep.Root)
			}

			late := testTraces("acme", monthA.Add(time.Hour), 1)
			f.write(t, f.sink, late)
			wantF := []found{{AfterTombstone, logA, 10, late[0].ID}}
			if diff := cmp.Diff(wantF, founds(f.verify(t, false))); diff != "" {
				t.Errorf("late trace (-want +got):\n%s", diff)
			}

			if err := f.deleteTenant(t, "we ird\n", false, true); err != nil {
				t.Fatal(err)
			}
			wantF = append(wantF, found{RowDeleted, logW, 0, f.w[0].ID}, found{RowDeleted, logW, 1, f.w[1].ID})
			if diff := cmp.Diff(wantF, founds(f.verify(t, false))); diff != "" {
				t.Errorf("delete by hand (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRootEventEncoding pins the root event encoding: a change to it must come with a new
// RootEventVersion.
func TestRootEventEncoding(t *testing.T) {
	e := RootEvent{Kind: EventSeal, TenantID: "acme", Month: "2026-11", Size: 10, Root: make([]byte, 32), AtUS: 1}
	want := "01" + "00000004" + "7365616c" + "00000004" + "61636d65" + "00000007" + "323032362d3131" +
		"000000000000000a" + "00000020" + fmt.Sprintf("%064x", 0) + "0000000000000001"
	if got := fmt.Sprintf("%x", e.Encode()); got != want {
		t.Errorf("encoding\n got %s\nwant %s", got, want)
	}
	if got, wantH := e.Hash(), rfc6962.DefaultHasher.HashLeaf(e.Encode()); string(got) != string(wantH) {
		t.Error("hash is not the RFC 6962 leaf hash of the encoding")
	}
}
