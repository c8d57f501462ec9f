package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

func TestParseFlagsSlowStreams(t *testing.T) {
	o, err := parseFlags([]string{"-slow-streams", "500", "-slow-streams-only", "-no-reverseproxy"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.slowStreams != 500 || !o.slowStreamsOnly || !o.noReverseProxy {
		t.Errorf("got slowStreams %d, slowStreamsOnly %v, noReverseProxy %v", o.slowStreams, o.slowStreamsOnly, o.noReverseProxy)
	}
	for _, bad := range [][]string{{"-slow-streams", "-1"}, {"-slow-streams-only"}, {"-slow-streams", "10", "-direct-only"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# HELP go_goroutines Goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n"+
			"loom_traces_lost_total{reason=\"write\"} 3\ngo_memstats_heap_inuse_bytes 123456\n")
	}))
	defer srv.Close()
	m, err := scrape(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"go_goroutines": 42, "go_memstats_heap_inuse_bytes": 123456}, m); diff != "" {
		t.Errorf("scrape (-want +got):\n%s", diff)
	}
}

func TestEstablishedTo(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		conns = append(conns, c)
	}
	if n, err := establishedTo(port); err != nil || n != len(conns) {
		t.Errorf("establishedTo(%d) = %d, %v; want %d", port, n, err, len(conns))
	}
}
