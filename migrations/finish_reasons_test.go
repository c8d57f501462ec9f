package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/sqlitedb"
)

// TestFinishReasonsUpgrade: a trace stored before 00008 reads back with no finish reasons
// (an empty array) once the migration ran, the column refuses NULL, and 00008 goes down
// and up again over stored rows.
func TestFinishReasonsUpgrade(t *testing.T) {
	ctx := context.Background()
	const insertOld = `INSERT INTO traces (id, created_at, tenant_id, api_key_id, request_id, model, served_model,
		provider, stream, status, error_type, client_aborted, prompt_tokens, completion_tokens, cached_tokens,
		reasoning_tokens, usage_source, price_version, latency_us, ttfb_us, overhead_us, response_truncated, key_version)
		VALUES (%s, 't', 'k', '', 'm', 'm', 'p', false, 200, '', false, 1, 1, 0, 0, 'reported', '', 1, 1, 1, false, 1)`
	tests := []struct {
		dialect  string
		open     func(t *testing.T) *sql.DB
		insert   string
		read     string // the column as a JSON array
		setNull  string // a new row with the column NULL
		newValue string // a new row with two reasons
	}{
		{
			dialect: Postgres,
			open: func(t *testing.T) *sql.DB {
				pool, err := pgxpool.New(ctx, pgtest.New(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				db := stdlib.OpenDBFromPool(pool)
				t.Cleanup(func() { db.Close() })
				return db
			},
			insert:   `SELECT loom_ensure_trace_partition(DATE '2026-05-01'); ` + fmt.Sprintf(insertOld, `'0190a000-0000-7000-8000-000000000001', TIMESTAMPTZ '2026-05-02 10:00:00Z'`),
			read:     `SELECT array_to_json(finish_reasons)::text FROM traces ORDER BY id`,
			setNull:  fmt.Sprintf(insertOldWith(insertOld), `'0190a000-0000-7000-8000-000000000002', TIMESTAMPTZ '2026-05-02 10:00:01Z'`, "NULL"),
			newValue: fmt.Sprintf(insertOldWith(insertOld), `'0190a000-0000-7000-8000-000000000003', TIMESTAMPTZ '2026-05-02 10:00:02Z'`, `ARRAY['stop','length']`),
		},
		{
			dialect: SQLite,
			open: func(t *testing.T) *sql.DB {
				db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			},
			insert:   fmt.Sprintf(insertOld, `'0190a000-0000-7000-8000-000000000001', 1777716000000000`),
			read:     `SELECT finish_reasons FROM traces ORDER BY id`,
			setNull:  fmt.Sprintf(insertOldWith(insertOld), `'0190a000-0000-7000-8000-000000000002', 1777716000000001`, "NULL"),
			newValue: fmt.Sprintf(insertOldWith(insertOld), `'0190a000-0000-7000-8000-000000000003', 1777716000000002`, `'["stop","length"]'`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.dialect, func(t *testing.T) {
			db := tt.open(t)
			p, err := provider(db, tt.dialect)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, 7); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, tt.insert); err != nil {
				t.Fatalf("a row before 00008: %v", err)
			}
			for range 2 { // up, then down and up again over the stored rows
				if _, err := p.UpTo(ctx, 8); err != nil {
					t.Fatal(err)
				}
				if _, err := p.DownTo(ctx, 7); err != nil {
					t.Fatalf("down: %v", err)
				}
			}
			if _, err := p.UpTo(ctx, 8); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, tt.setNull); err == nil {
				t.Error("finish_reasons took NULL")
			}
			if _, err := db.ExecContext(ctx, tt.newValue); err != nil {
				t.Fatal(err)
			}
			var got []string
			rows, err := db.QueryContext(ctx, tt.read)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				got = append(got, s)
			}
			if want := []string{`[]`, `["stop","length"]`}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
				t.Errorf("finish_reasons = %q, want %q", got, want)
			}
		})
	}
}

// insertOldWith is insertOld with finish_reasons set to a third argument.
func insertOldWith(insertOld string) string {
	return strings.Replace(strings.Replace(insertOld, "key_version)", "key_version, finish_reasons)", 1), "false, 1)", "false, 1, %s)", 1)
}
