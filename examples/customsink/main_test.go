package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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
