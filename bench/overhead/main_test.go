package main

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-concurrency", "1, 8", "-modes", "stream", "-duration", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{1, 8}, o.concurrency); diff != "" {
		t.Errorf("concurrency (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]bool{true}, o.modes); diff != "" {
		t.Errorf("modes (-want +got):\n%s", diff)
	}
	for _, bad := range [][]string{{"-concurrency", "0"}, {"-modes", "fast"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestProcStats reads the CPU time and peak RSS of a child that burns some CPU.
func TestProcStats(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	log := t.TempDir() + "/log"
	p, err := startProcess(sh, []string{"-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo burned; sleep 30"}, os.Environ(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	if _, err := p.waitLine(t.Context(), "burned", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ticks, err := p.cpuTicks()
	if err != nil || ticks <= 0 {
		t.Errorf("cpu ticks %d, %v; want > 0", ticks, err)
	}
	rss, err := p.peakRSSKB()
	if err != nil || rss <= 0 {
		t.Errorf("peak RSS %d kB, %v", rss, err)
	}
	p.stop(5 * time.Second)
	if !p.exited() {
		t.Error("still running after stop")
	}
}

func TestCleanEnv(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://elsewhere")
	t.Setenv("OPENAI_API_KEY", "sk-real")
	t.Setenv("LOOM_TRACING", "off")
	for _, kv := range cleanEnv() {
		for _, bad := range []string{"DATABASE_URL=", "OPENAI_API_KEY=", "LOOM_TRACING="} {
			if strings.HasPrefix(kv, bad) {
				t.Errorf("%s passed to the gateway", kv)
			}
		}
	}
}
