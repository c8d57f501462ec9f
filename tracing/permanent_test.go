package tracing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-gateway/loom/migrations"
)

// pgRefuseTrigger makes the test database raise the SQLSTATE named in a trace's model
// ("sqlstate:40001"), as the server itself would for such a failure.
const pgRefuseTrigger = `
CREATE FUNCTION loom_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.model LIKE 'sqlstate:%' THEN
        RAISE EXCEPTION 'test refusal' USING ERRCODE = substr(NEW.model, 10);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER loom_test_refuse BEFORE INSERT ON traces FOR EACH ROW EXECUTE FUNCTION loom_test_refuse();`

func TestPostgresSinkClassifiesErrors(t *testing.T) {
	pool := newSinkTestPostgres(t)
	sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), pgRefuseTrigger); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		change        func(*Trace)
		wantPermanent bool
	}{
		{name: "NUL in text", change: func(t *Trace) { t.Model = "gpt\x00" }, wantPermanent: true},
		{name: "invalid UTF-8", change: func(t *Trace) { t.RequestID = "\xff\xfe" }, wantPermanent: true},
		{name: "id not a UUID", change: func(t *Trace) { t.ID = "req-1" }, wantPermanent: true},
		{name: "data exception 22003", change: func(t *Trace) { t.Model = "sqlstate:22003" }, wantPermanent: true},
		{name: "not null violation 23502", change: func(t *Trace) { t.Model = "sqlstate:23502" }, wantPermanent: true},
		{name: "foreign key violation 23503", change: func(t *Trace) { t.Model = "sqlstate:23503" }, wantPermanent: true},
		{name: "program limit 54000", change: func(t *Trace) { t.Model = "sqlstate:54000" }, wantPermanent: true},
		{name: "serialization failure 40001", change: func(t *Trace) { t.Model = "sqlstate:40001" }},
		{name: "deadlock 40P01", change: func(t *Trace) { t.Model = "sqlstate:40P01" }},
		{name: "disk full 53100", change: func(t *Trace) { t.Model = "sqlstate:53100" }},
		{name: "out of memory 53200", change: func(t *Trace) { t.Model = "sqlstate:53200" }},
		{name: "too many connections 53300", change: func(t *Trace) { t.Model = "sqlstate:53300" }},
		{name: "admin shutdown 57P01", change: func(t *Trace) { t.Model = "sqlstate:57P01" }},
		{name: "missing partition 23514", change: func(t *Trace) { t.Model = "sqlstate:23514" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := sinkTestTraces(3, time.Now())
			tt.change(batch[1])
			err := sink.WriteBatch(t.Context(), batch)
			if err == nil {
				t.Fatal("WriteBatch succeeded")
			}
			if got := IsPermanent(err); got != tt.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, got, tt.wantPermanent)
			}
		})
	}
	t.Run("duplicate is not an error", func(t *testing.T) {
		batch := sinkTestTraces(2, time.Now())
		for range 2 {
			if err := sink.WriteBatch(t.Context(), batch); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
		defer cancel()
		<-ctx.Done()
		if err := sink.WriteBatch(ctx, sinkTestTraces(1, time.Now())); err == nil || IsPermanent(err) {
			t.Errorf("WriteBatch with a spent deadline: %v, want a transient error", err)
		}
	})
}

// sqliteRefuseTrigger makes SQLite abort the insert of a trace whose model is "refuse", as
// a constraint would.
const sqliteRefuseTrigger = `CREATE TRIGGER loom_test_refuse BEFORE INSERT ON traces
WHEN NEW.model = 'refuse' BEGIN SELECT RAISE(ABORT, 'test refusal'); END`

func TestSQLiteSinkClassifiesErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loom.db")
	db := openSinkTestSQLite(t, path, 10000)
	if _, err := db.ExecContext(t.Context(), sqliteRefuseTrigger); err != nil {
		t.Fatal(err)
	}
	sink := NewSQLiteSink(db)

	t.Run("constraint", func(t *testing.T) {
		batch := sinkTestTraces(3, time.Now())
		batch[1].Model = "refuse"
		if err := sink.WriteBatch(t.Context(), batch); !IsPermanent(err) {
			t.Errorf("WriteBatch: %v, want a permanent error", err)
		}
	})
	t.Run("busy", func(t *testing.T) {
		// Another connection holds the write lock; the sink's gives up at once.
		fast := NewSQLiteSink(openSinkTestSQLite(t, path, 1))
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(t.Context(), "INSERT INTO tenants_lock_probe VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		err = fast.WriteBatch(t.Context(), sinkTestTraces(1, time.Now()))
		var coded interface{ Code() int }
		if !errors.As(err, &coded) || coded.Code()&0xff != 5 || IsPermanent(err) {
			t.Errorf("WriteBatch while the database is locked: %v, want a transient SQLITE_BUSY", err)
		}
	})
	t.Run("codes", func(t *testing.T) {
		for _, tc := range []struct {
			code          int
			wantPermanent bool
		}{
			{18, true},         // SQLITE_TOOBIG
			{19, true},         // SQLITE_CONSTRAINT
			{19 | 5<<8, true},  // SQLITE_CONSTRAINT_NOTNULL
			{20, true},         // SQLITE_MISMATCH
			{5, false},         // SQLITE_BUSY
			{6, false},         // SQLITE_LOCKED
			{13, false},        // SQLITE_FULL
			{10, false},        // SQLITE_IOERR
			{10 | 3<<8, false}, // SQLITE_IOERR_WRITE
		} {
			err := sqliteClassify(fmt.Errorf("insert: %w", codedError(tc.code)))
			if got := IsPermanent(err); got != tc.wantPermanent {
				t.Errorf("code %d: IsPermanent = %v, want %v", tc.code, got, tc.wantPermanent)
			}
		}
	})
}

type codedError int

func (e codedError) Error() string { return fmt.Sprintf("sqlite error %d", int(e)) }
func (e codedError) Code() int     { return int(e) }

// openSinkTestSQLite opens a migrated SQLite database at path, with a lock table for tests
// to take the write lock with, waiting busyMS for a lock.
func openSinkTestSQLite(tb testing.TB, path string, busyMS int) *sql.DB {
	tb.Helper()
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", fmt.Sprintf("busy_timeout(%d)", busyMS)} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if _, err := os.Stat(path); err == nil {
		return db
	}
	if err := migrations.Up(tb.Context(), db, migrations.SQLite); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.ExecContext(tb.Context(), "CREATE TABLE tenants_lock_probe (x INTEGER)"); err != nil {
		tb.Fatal(err)
	}
	return db
}

// refusingSQLite is a real SQLite sink that refuses (SQLITE_CONSTRAINT) every trace whose
// model is "refuse", and every trace while the returned function's argument is true.
func refusingSQLite(t *testing.T) (*SQLiteSink, sinkStore, func(all bool)) {
	db := newSinkTestSQLite(t)
	if _, err := db.ExecContext(t.Context(), sqliteRefuseTrigger); err != nil {
		t.Fatal(err)
	}
	sink := NewSQLiteSink(db)
	refuseAll := func(all bool) {
		q := "DROP TRIGGER IF EXISTS loom_test_refuse_all"
		if all {
			q = `CREATE TRIGGER loom_test_refuse_all BEFORE INSERT ON traces
				BEGIN SELECT RAISE(ABORT, 'revoked'); END`
		}
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	return sink, sqliteSinkStore(sink, db), refuseAll
}

func storedIDs(st sinkStore, t *testing.T) []string {
	var ids []string
	for _, tr := range st.read(t) {
		ids = append(ids, tr.ID)
	}
	return ids
}

// TestPipelineQuarantine: a batch that fails permanently is split down to the traces at
// fault; the rest are written, the refused ones are set aside in the dead-letter file,
// counted and logged once each; ReplayDeadLetter writes them once the cause is gone.
func TestPipelineQuarantine(t *testing.T) {
	sink, st, _ := refusingSQLite(t)
	other := NewMemorySink()
	dir := t.TempDir()
	var logs syncBuffer
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink, other}, SpoolDir: dir, BatchSize: 64,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const n = 200
	bad := map[int]bool{3: true, 64: true, 65: true, 150: true}
	var want, wantBad []string
	for i := range n {
		tr := pipeTrace(i)
		if bad[i] {
			tr.Model = "refuse"
			wantBad = append(wantBad, tr.ID)
		} else {
			want = append(want, tr.ID)
		}
		if err := p.Record(t.Context(), tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, storedIDs(st, t)); diff != "" {
		t.Errorf("stored traces (-want +got):\n%s", diff)
	}
	if got := len(other.Traces()); got != n {
		t.Errorf("the other sink has %d traces, want all %d", got, n)
	}
	dead, err := ReadDeadLetter(dir)
	if err != nil {
		t.Fatal(err)
	}
	var gotBad []string
	for _, d := range dead {
		gotBad = append(gotBad, d.Trace.ID)
		if !strings.Contains(d.Reason, "test refusal") {
			t.Errorf("dead letter %s: reason %q, want the sink's error", d.Trace.ID, d.Reason)
		}
		if d.Trace.Model != "refuse" || d.Trace.SealedRequest != nil {
			t.Errorf("dead letter %s: model %q, sealed %q; want the trace as spooled", d.Trace.ID, d.Trace.Model, d.Trace.SealedRequest)
		}
	}
	if diff := cmp.Diff(wantBad, gotBad); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.Quarantined != int64(len(bad)) || st.Lost != 0 || st.Written != n {
		t.Errorf("Stats = %+v, want Quarantined %d, Written %d, nothing lost", st, len(bad), n)
	}
	for _, id := range wantBad {
		if c := strings.Count(logs.String(), "trace_id="+id); c != 1 {
			t.Errorf("trace %s logged %d times, want once", id, c)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, deadLetterName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("dead-letter file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// The cause is fixed: the replay writes the set-aside traces and empties the file.
	if err := st.exec(t.Context(), "DROP TRIGGER loom_test_refuse"); err != nil {
		t.Fatal(err)
	}
	written, kept, err := ReplayDeadLetter(t.Context(), dir, sink, other)
	if err != nil || written != len(bad) || kept != 0 {
		t.Errorf("ReplayDeadLetter = %d written, %d kept, %v; want %d, 0, nil", written, kept, err, len(bad))
	}
	if diff := cmp.Diff(sortedStrings(append(want, wantBad...)), storedIDs(st, t)); diff != "" {
		t.Errorf("stored traces after the replay (-want +got):\n%s", diff)
	}
	if got := len(other.Traces()); got != n {
		t.Errorf("the other sink has %d traces after the replay, want %d (each once)", got, n)
	}
	if dead, err := ReadDeadLetter(dir); err != nil || len(dead) != 0 {
		t.Errorf("dead letters after the replay: %d, %v; want none", len(dead), err)
	}
	if written, kept, err := ReplayDeadLetter(t.Context(), dir, sink); err != nil || written != 0 || kept != 0 {
		t.Errorf("second ReplayDeadLetter = %d, %d, %v; want nothing to do", written, kept, err)
	}
}

// TestReplayDeadLetterKeepsRefused: a trace still refused stays in the file with its new
// reason; the others are removed from it.
func TestReplayDeadLetterKeepsRefused(t *testing.T) {
	sink, st, _ := refusingSQLite(t)
	dir := t.TempDir()
	tab := crc32.MakeTable(crc32.Castagnoli)
	still := pipeWant(1)
	still.Model = "refuse"
	for _, tr := range []*Trace{pipeWant(0), still, pipeWant(2)} {
		if err := appendDeadLetter(dir, tr, "earlier refusal", tab); err != nil {
			t.Fatal(err)
		}
	}
	written, kept, err := ReplayDeadLetter(t.Context(), dir, sink)
	if err != nil || written != 2 || kept != 1 {
		t.Fatalf("ReplayDeadLetter = %d written, %d kept, %v; want 2, 1, nil", written, kept, err)
	}
	if diff := cmp.Diff([]string{pipeWant(0).ID, pipeWant(2).ID}, storedIDs(st, t)); diff != "" {
		t.Errorf("stored traces (-want +got):\n%s", diff)
	}
	dead, err := ReadDeadLetter(dir)
	if err != nil || len(dead) != 1 || dead[0].Trace.ID != still.ID || !strings.Contains(dead[0].Reason, "test refusal") {
		t.Errorf("dead letters after the replay: %+v, %v; want only %s, with the new reason", dead, err, still.ID)
	}
}

// TestPipelineSinkRefusesEverything: a sink that refuses every trace is an outage, not a
// stream of bad traces: after maxRefusedInARow refusals the pipeline stops quarantining,
// says so, and retries until the sink takes traces again; then nothing more is lost.
func TestPipelineSinkRefusesEverything(t *testing.T) {
	sink, st, refuseAll := refusingSQLite(t)
	refuseAll(true)
	dir := t.TempDir()
	var logs syncBuffer
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir, BatchSize: 64,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const n = 100
	recordAll(t, p, 0, n)
	waitFor(t, "the outage to be reported", func() bool {
		return strings.Contains(logs.String(), "sink refuses every trace: treating as outage")
	})
	waitFor(t, "a retry during the outage", func() bool { return p.Stats().Retries > 0 })
	if st := p.Stats(); st.Quarantined != maxRefusedInARow || st.RefusingSinks != 1 {
		t.Errorf("Stats %+v; want Quarantined %d (the rest held as in an outage), RefusingSinks 1", st, maxRefusedInARow)
	}
	if c := strings.Count(logs.String(), "treating as outage"); c != 1 {
		t.Errorf("outage reported %d times, want once", c)
	}
	refuseAll(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := len(st.read(t)); got != n-maxRefusedInARow {
		t.Errorf("stored %d traces, want %d", got, n-maxRefusedInARow)
	}
	if st := p.Stats(); st.Quarantined != maxRefusedInARow || st.Lost != 0 || st.RefusingSinks != 0 {
		t.Errorf("Stats = %+v, want Quarantined %d, nothing lost, no sink refusing", st, maxRefusedInARow)
	}
	written, _, err := ReplayDeadLetter(t.Context(), dir, sink)
	if err != nil || written != maxRefusedInARow {
		t.Errorf("ReplayDeadLetter = %d, %v; want %d", written, err, maxRefusedInARow)
	}
	if got := len(st.read(t)); got != n {
		t.Errorf("stored %d traces after the replay, want %d", got, n)
	}
}

// TestPipelineRefusedWithoutSpool: without a spool directory a refused trace cannot be set
// aside; it is counted as lost, and the others are written.
func TestPipelineRefusedWithoutSpool(t *testing.T) {
	sink, st, _ := refusingSQLite(t)
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}})
	for i := range 10 {
		tr := pipeTrace(i)
		if i == 4 {
			tr.Model = "refuse"
		}
		if err := p.Record(t.Context(), tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := len(st.read(t)); got != 9 {
		t.Errorf("stored %d traces, want 9", got)
	}
	if st := p.Stats(); st.LostRefused != 1 || st.Lost != 1 || st.Quarantined != 0 {
		t.Errorf("Stats = %+v, want LostRefused 1", st)
	}
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
