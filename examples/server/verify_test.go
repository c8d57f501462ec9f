package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/sqlitedb"
)

// TestVerifyCommand: a server's traces verify against the checkpoints it exported (the
// last one written on shutdown); -trace prints a proof a third party checks with the
// transparency-dev libraries and the public key; an edited row fails verify, named.
func TestVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, _, closeServer := startServer(t, cfg, &out)
	var ids []string
	for _, p := range []string{"one", "two", "three"} {
		ids = append(ids, chat(t, s.Addr, s.BootstrapKey, p))
	}
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ledger.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger key file: %v %v, want mode 0600", fi, err)
	}

	var vout bytes.Buffer
	if err := runVerify(context.Background(), []string{"-data", dir, "-deep"}, noEnv, &vout); err != nil {
		t.Fatalf("verify: %v\n%s", err, vout.String())
	}
	if !strings.Contains(vout.String(), "ok: 3 traces in 1 logs") {
		t.Errorf("verify output:\n%s", vout.String())
	}

	vout.Reset()
	if err := runVerify(context.Background(), []string{"-data", dir, "-trace", ids[1]}, noEnv, &vout); err != nil {
		t.Fatalf("verify -trace: %v", err)
	}
	var inc ledger.Inclusion
	if err := json.Unmarshal(vout.Bytes(), &inc); err != nil {
		t.Fatalf("%v:\n%s", err, vout.String())
	}
	skey, _ := os.ReadFile(filepath.Join(dir, "ledger.key"))
	vkey, err := ledger.VerifierKey(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	n, err := note.Open([]byte(inc.Checkpoint), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.Text, "\n3\n") || inc.TreeSize != 3 {
		t.Errorf("checkpoint %q, tree size %d: want size 3", n.Text, inc.TreeSize)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, inc.LeafIndex, inc.TreeSize, inc.LeafHash, inc.Proof, inc.Root); err != nil {
		t.Errorf("inclusion proof: %v", err)
	}

	db, err := sqlitedb.Open(context.Background(), filepath.Join(dir, "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER traces_no_update", "UPDATE traces SET status = 500 WHERE id = '" + ids[2] + "'"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	vout.Reset()
	if err := runVerify(context.Background(), []string{"-data", dir}, noEnv, &vout); err == nil {
		t.Fatalf("verify passed an edited row:\n%s", vout.String())
	}
	if want := "row-edited leaf 2 trace " + ids[2]; !strings.Contains(vout.String(), want) {
		t.Errorf("verify output does not name %q:\n%s", want, vout.String())
	}
}

// TestLedgerKeyFileIsPrivate: the embedded default's signing key file is created 0600 in one
// atomic step (no temporary file left), and one other users can read is refused, at start
// and by verify, with the chmod that fixes it; a corrupt one is refused too.
func TestLedgerKeyFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, _, closeServer := startServer(t, cfg, &out)
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ledger.key")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger key file: %v %v, want mode 0600", fi, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".ledger.key.tmp*")); len(leftovers) != 0 {
		t.Errorf("temporary key files left: %v", leftovers)
	}
	skey, _ := os.ReadFile(path)
	if strings.Contains(out.String(), strings.TrimSpace(string(skey))) {
		t.Errorf("the signing key was logged:\n%s", out.String())
	}

	for _, mode := range []os.FileMode{0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: start accepted a ledger key readable by others (err %v)", mode, err)
		}
		err = runVerify(context.Background(), []string{"-data", dir}, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: verify used a ledger key readable by others (err %v)", mode, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runVerify(context.Background(), []string{"-data", dir}, noEnv, io.Discard); err != nil {
		t.Errorf("verify with the key back at 0600: %v", err)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Errorf("a corrupt ledger key file: err %v, want refused without echoing it", err)
	}
}
