package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loom-gateway/loom/sqlitedb"
)

// A trace the store refuses for good is set aside, listed by "deadletter", and written
// by "deadletter replay" once the cause is gone.
func TestDeadLetterCommand(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, _, closeServer := startServer(t, cfg, &out)
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A rule the operator got wrong: every trace of one model is refused (a constraint
	// failure, which SQLite repeats: permanent).
	if _, err := db.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON traces WHEN NEW.model = 'refuse-me'
		BEGIN SELECT RAISE(ABORT, 'refused by rule'); END`); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.Addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"refuse-me","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+s.BootstrapKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	refused := resp.Header.Get("X-Request-Id")
	normal := chat(t, s.Addr, s.BootstrapKey, "hello")
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	stored := func(id string) bool {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM traces WHERE id = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	if stored(refused) || !stored(normal) {
		t.Fatalf("before replay: refused stored %v, normal stored %v", stored(refused), stored(normal))
	}

	out.Reset()
	if err := runCommand(&out, "deadletter", "-data", dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), refused) || !strings.Contains(out.String(), "refused by rule") || !strings.Contains(out.String(), "1 trace(s)") {
		t.Errorf("list:\n%s", out.String())
	}
	if _, err := db.ExecContext(ctx, "DROP TRIGGER refuse"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runCommand(&out, "deadletter", "replay", "-data", dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "replayed 1 trace(s); 0 refused again") || !stored(refused) {
		t.Errorf("replay: stored %v\n%s", stored(refused), out.String())
	}
	out.Reset()
	if err := runCommand(&out, "deadletter", "-data", dir); err != nil || !strings.Contains(out.String(), "0 trace(s)") {
		t.Errorf("after replay (%v):\n%s", err, out.String())
	}
}
