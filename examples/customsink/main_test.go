package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loom-gateway/loom/tracing"
)

func TestCustomSink(t *testing.T) {
	out := filepath.Join(t.TempDir(), "traces.jsonl")
	var stdout bytes.Buffer
	if err := run(context.Background(), out, &stdout); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	if len(lines) != 1 {
		t.Fatalf("%d traces, want 1:\n%s", len(lines), stdout.Bytes())
	}
	var tr tracing.Trace
	if err := json.Unmarshal(lines[0], &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Model != "mock-1" || tr.Status != 200 || tr.UsageSource != tracing.UsageReported || len(tr.SealedRequest) == 0 ||
		bytes.Contains(lines[0], []byte("hello")) || tr.RequestBody != nil {
		t.Errorf("trace = %s", lines[0])
	}
}

// A batch offered twice is stored once.
func TestJSONLSinkDeduplicates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.jsonl")
	s, err := NewJSONLSink(path)
	if err != nil {
		t.Fatal(err)
	}
	batch := []*tracing.Trace{{ID: "a"}, {ID: "b"}}
	for range 2 {
		if err := s.WriteBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown(context.Background())
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte("\n")); n != 2 {
		t.Errorf("%d lines, want 2:\n%s", n, b)
	}
}

// A trace offered again after a restart (the spool re-sends what was not acknowledged) is
// not written twice; a line torn by a crash is cut.
func TestJSONLSinkDeduplicatesAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.jsonl")
	s, err := NewJSONLSink(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(context.Background(), []*tracing.Trace{{ID: "a"}, {ID: "b"}}); err != nil {
		t.Fatal(err)
	}
	s.Shutdown(context.Background())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"ID":"c","Mod`) // a crash mid-append
	f.Close()

	s, err = NewJSONLSink(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(context.Background(), []*tracing.Trace{{ID: "b"}, {ID: "c"}, {ID: "a"}}); err != nil {
		t.Fatal(err)
	}
	s.Shutdown(context.Background())
	b, _ := os.ReadFile(path)
	var ids []string
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var tr tracing.Trace
		if err := json.Unmarshal(line, &tr); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ids = append(ids, tr.ID)
	}
	if got, want := strings.Join(ids, ","), "a,b,c"; got != want {
		t.Errorf("stored IDs %s, want %s", got, want)
	}
}
