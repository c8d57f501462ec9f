// Command customsink shows how to plug your own trace store into Loom: a tracing.Sink that
// appends each trace as one JSON line to a file, next to (or instead of) the built-in
// PostgreSQL and SQLite sinks.
//
//	go run ./examples/customsink -out traces.jsonl
//
// It starts a gateway on the mock provider, sends one request through it, shuts down (which
// flushes every trace to every sink) and prints the file.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/loom-gateway/loom"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// JSONLSink writes traces as JSON lines. The contract it honours (tracing.Sink):
//   - WriteBatch returns nil only once the whole batch is durable (here: written and
//     fsynced); on error the pipeline keeps the batch in its spool and retries later.
//   - The same trace may be offered again after a failure or a restart; a sink stores it
//     once. Here, a set of seen IDs, loaded from the file when it is opened, so a trace
//     re-sent after a restart is not written twice either (a real store would use a
//     unique key).
//   - Bodies arrive sealed (SealedRequest/SealedResponse); the sink never sees plaintext.
type JSONLSink struct {
	mu   sync.Mutex
	f    *os.File
	seen map[string]bool
}

var _ tracing.Sink = (*JSONLSink)(nil)

// NewJSONLSink opens (appending) the file at path and reads the IDs already in it. A last
// line cut short by a crash is removed: its batch was not acknowledged, so the pipeline
// offers it again.
func NewJSONLSink(path string) (*JSONLSink, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	s := &JSONLSink{f: f, seen: map[string]bool{}}
	if err := s.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("customsink: %s: %w", path, err)
	}
	return s, nil
}

// load fills seen from the file, and cuts a torn last line.
func (s *JSONLSink) load() error {
	r := bufio.NewReader(s.f)
	var whole int64 // bytes up to the end of the last whole line
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(line) > 0 {
				return s.f.Truncate(whole)
			}
			return nil
		}
		if err != nil {
			return err
		}
		whole += int64(len(line))
		var t struct{ ID string }
		if err := json.Unmarshal(line, &t); err != nil {
			return fmt.Errorf("line ending at byte %d: %w", whole, err)
		}
		s.seen[t.ID] = true
	}
}

// WriteBatch implements tracing.Sink.
func (s *JSONLSink) WriteBatch(ctx context.Context, batch []*tracing.Trace) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := bufio.NewWriter(s.f)
	enc := json.NewEncoder(w)
	var added []string
	for _, t := range batch {
		if s.seen[t.ID] {
			continue
		}
		if err := enc.Encode(t); err != nil {
			return err
		}
		added = append(added, t.ID)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	for _, id := range added {
		s.seen[id] = true
	}
	return ctx.Err()
}

// Shutdown implements tracing.Sink.
func (s *JSONLSink) Shutdown(context.Context) error { return s.f.Close() }

func main() {
	out := flag.String("out", "traces.jsonl", "file the traces are appended to")
	flag.Parse()
	if err := run(context.Background(), *out, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out string, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "loom-customsink")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		return err
	}
	sink, err := NewJSONLSink(out)
	if err != nil {
		return err
	}
	master, _ := loomcrypto.GenerateMasterKey()
	keyring, err := loomcrypto.ParseKeyring(master)
	if err != nil {
		return err
	}
	gw, err := loom.New(loom.Config{
		Store:   tenancy.NewSQLiteStore(db),
		Keyring: keyring,
		Routes:  []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, SpoolDir: filepath.Join(dir, "spool")},
	})
	if err != nil {
		return err
	}
	tenant, err := gw.Admin().CreateTenant(ctx, "demo")
	if err != nil {
		return err
	}
	key, _, err := gw.Admin().CreateKey(ctx, tenant.ID, "demo")
	if err != nil {
		return err
	}
	srv := httptest.NewServer(gw)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock-1","messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	srv.Close()
	if err := gw.Shutdown(ctx); err != nil { // flushes every trace, then shuts the sinks down
		return err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s", b)
	return nil
}
