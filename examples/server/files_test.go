package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The data directory's secrets are private: the master key and the database are created
// 0600, a master key file others can read is refused, and an operator's own bootstrap key
// is not echoed to stdout.
func TestDataFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	const given = "loom_operatorchosen0123456789abcdef"
	env := func(k string) string {
		if k == "LOOM_BOOTSTRAP_KEY" {
			return given
		}
		return ""
	}
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, env)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, _, closeServer := startServer(t, cfg, &out)
	if s.BootstrapKey != given {
		t.Fatalf("bootstrap key %q, want the given one", s.BootstrapKey)
	}
	chat(t, s.Addr, given, "hi")
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), given) {
		t.Errorf("the operator's bootstrap key was echoed:\n%s", out.String())
	}
	for _, name := range []string{"master.key", "loom.db", "loom.db-wal"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if os.IsNotExist(err) && name == "loom.db-wal" {
			continue // checkpointed away at close
		}
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, perm)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".master.key.tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary key files left: %v", leftovers)
	}

	if err := os.Chmod(filepath.Join(dir, "master.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, env)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a master key readable by others was accepted (err %v)", err)
	}
}
