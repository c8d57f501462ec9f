package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadAndBench: the generator fills a SQLite store through the sink and the rollup
// step, and the bench answers every query from it.
func TestLoadAndBench(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loom.db")
	var out strings.Builder
	if err := run(t.Context(), []string{"-sqlite", path, "-n", "3000", "-tenants", "4", "-batch", "250"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "wrote 3000 traces") {
		t.Errorf("load output: %q", out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"bench", "-sqlite", path, "-runs", "3"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"summary 30d", "timeseries 24h (15m buckets)", "list, filtered by model", "one trace by id"} {
		if !strings.Contains(out.String(), q) {
			t.Errorf("bench output lacks %q:\n%s", q, out.String())
		}
	}
}
