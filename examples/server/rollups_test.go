package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

// TestRollupsRebuildCommand: `rollups rebuild` puts right rollups that were damaged, and
// refuses a command line it cannot run with exit code 2.
func TestRollupsRebuildCommand(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 4, 1, 23, 59, 0, 0, time.UTC)
	var batch []*tracing.Trace
	for i := range 40 {
		batch = append(batch, &tracing.Trace{ID: uuid.Must(uuid.NewV7()).String(), CreatedAt: base.Add(time.Duration(i) * 7 * time.Second),
			TenantID: "ten", APIKeyID: "key", Model: "m", Provider: "p", Status: 200, LatencyUS: int64(1000 * i)})
	}
	if err := tracing.NewSQLiteSink(db, rollup.SQLite).WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := rollup.SQLiteFolder(db).All(ctx); err != nil {
		t.Fatal(err)
	}
	sum := func() (n int64) {
		if err := db.QueryRow("SELECT sum(requests) FROM trace_rollup_totals WHERE grain_s = 60").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := db.Exec("UPDATE trace_rollup_totals SET requests = requests + 100"); err != nil {
		t.Fatal(err)
	}
	if sum() == 40 {
		t.Fatal("damage did not take")
	}
	var out strings.Builder
	if err := runCommand(&out, "rollups", "rebuild", "-data", dir); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != 40 {
		t.Errorf("after rebuild: %d requests in the minute rollups, want 40", got)
	}
	if !strings.Contains(out.String(), "2026-04-01 to 2026-04-03: 40 traces") {
		t.Errorf("output: %q", out.String())
	}
	for _, args := range [][]string{{"rollups"}, {"rollups", "rebuild", "-from", "yesterday"},
		{"rollups", "rebuild", "-from", "2026-02-01T00:00:00Z", "-to", "2026-01-01T00:00:00Z"}} {
		var stderr strings.Builder
		if code := cli(args, stdio{getenv: noEnv, stdout: &out, stderr: &stderr}); code != exitUsage {
			t.Errorf("%v: exit code %d, want %d", args, code, exitUsage)
		}
	}
}
