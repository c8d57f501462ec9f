package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
)

var testMasterKey = func() string { k, _ := loomcrypto.GenerateMasterKey(); return k }()

func mustKeyring(t *testing.T, spec string) *loomcrypto.Keyring {
	t.Helper()
	k, err := loomcrypto.ParseKeyring(strings.TrimSpace(spec))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newBlockingUpstream is an OpenAI-compatible upstream that signals arrived for each chat
// request and answers only once release is closed (or the request is gone).
func newBlockingUpstream(t *testing.T, arrived chan<- struct{}, release <-chan struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, `{"error":{"message":"released","type":"server_error"}}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// dirEntries lists the names under dir (recursively, relative), or nil if it does not exist.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, path); rel != "." {
			names = append(names, rel)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// A first start that fails on a busy port writes nothing but the lock, so the next start
// with the same LOOM_BOOTSTRAP_KEY makes that key, and it works.
func TestBusyPortThenGoodStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dataDir := filepath.Join(t.TempDir(), "data")
	const key = "loom_busyport0123456789abcdef"
	env := serverEnv("LOOM_BOOTSTRAP_KEY=" + key)

	for _, tt := range []struct {
		name, setting string
		env           []string
		args          []string
	}{
		{"busy -addr", "-addr (LOOM_ADDR) " + busy.Addr().String(), env, []string{"-addr", busy.Addr().String()}},
		{"busy LOOM_PPROF_ADDR", "LOOM_PPROF_ADDR " + busy.Addr().String(), append(env, "LOOM_PPROF_ADDR="+busy.Addr().String()), []string{"-addr", "127.0.0.1:0"}},
	} {
		c := runChild(t, "", tt.env, append(tt.args, "-data", dataDir)...)
		if code := c.wait(t); code != exitError {
			t.Fatalf("%s: exit code %d, want %d", tt.name, code, exitError)
		}
		if msg := c.errOut.String(); !strings.Contains(msg, tt.setting) || !strings.Contains(msg, "address already in use") {
			t.Errorf("%s: the failure does not name %q and the cause:\n%s", tt.name, tt.setting, msg)
		}
		if diff := cmp.Diff([]string{"loom.lock"}, dirEntries(t, dataDir)); diff != "" {
			t.Errorf("%s: files left by the failed start (-want +got):\n%s", tt.name, diff)
		}
	}

	c2 := startChild(t, dataDir, env)
	chat(t, c2.addr, key, "after a failed first start")
	c2.terminate(t)
	if strings.Contains(c2.out.String()+c2.errOut.String(), key) {
		t.Errorf("the operator's key was echoed:\n%s%s", c2.out.String(), c2.errOut.String())
	}
}

// A second server on a live data directory is refused, naming the first, and touches
// nothing: the first keeps answering and its spool and traces are intact.
func TestSecondInstanceRefused(t *testing.T) {
	dataDir := t.TempDir()
	const key = "loom_secondinstance0123456789"
	env := serverEnv("LOOM_BOOTSTRAP_KEY=" + key)
	first := startChild(t, dataDir, env)
	ids := []string{chat(t, first.addr, key, "first")}
	spool := filepath.Join(dataDir, "spool")
	before := dirEntries(t, spool)
	if len(before) == 0 {
		t.Fatalf("no spool segment in %s", spool)
	}

	second := runChild(t, "", env, "-addr", "127.0.0.1:0", "-data", dataDir)
	if code := second.wait(t); code != exitError {
		t.Fatalf("second instance exit code %d, want %d", code, exitError)
	}
	want := "in use by process " + strconv.Itoa(first.cmd.Process.Pid)
	if msg := second.errOut.String(); !strings.Contains(msg, want) || strings.Contains(msg, "listening on") {
		t.Errorf("second instance: want a refusal naming %q, before listening:\n%s", want, msg)
	}
	replay := runChild(t, "", env, "deadletter", "replay", "-data", dataDir)
	if code := replay.wait(t); code != exitError || !strings.Contains(replay.errOut.String(), want) {
		t.Errorf("deadletter replay beside the server: exit %d, want %d naming %q:\n%s", code, exitError, want, replay.errOut.String())
	}
	if diff := cmp.Diff(before, dirEntries(t, spool)); diff != "" {
		t.Errorf("spool changed by the refused instance (-want +got):\n%s", diff)
	}

	ids = append(ids, chat(t, first.addr, key, "still here"))
	first.terminate(t)
	keyFile, err := os.ReadFile(filepath.Join(dataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	checkSQLiteTraces(t, filepath.Join(dataDir, "loom.db"), mustKeyring(t, string(keyFile)), ids)
}

// Words that are not commands start nothing; -h and version answer and exit 0. Each runs
// in an empty working directory, which must stay empty (no ./loom-data).
func TestCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // substrings
		wantStderr []string
	}{
		{"version", []string{"version"}, exitOK, []string{"loom " + versionString() + "\n"}, nil},
		{"unknown command", []string{"frobnicate"}, exitUsage, nil, []string{`unknown command "frobnicate"`, "Commands:"}},
		{"-h", []string{"-h"}, exitOK, []string{"Commands:", "serve", "migrate", "version", "prices", "verify", "-addr", "LOOM_LOG_FORMAT", "LOOM_SHUTDOWN_TIMEOUT", "OPENAI_BASE_URL"}, nil},
		{"--help", []string{"--help"}, exitOK, []string{"Commands:", "LOOM_ACCESS_LOG"}, nil},
		{"serve -h", []string{"serve", "-h"}, exitOK, []string{"Usage: loom serve", "-shutdown-timeout", "LOOM_BOOTSTRAP_KEY"}, nil},
		{"migrate -h", []string{"migrate", "-h"}, exitOK, []string{"Usage: loom migrate up|status"}, nil},
		{"prices -h", []string{"prices", "-h"}, exitOK, []string{"prices check", "prices export"}, nil},
		{"prices", []string{"prices"}, exitOK, []string{"gpt-4o-mini"}, nil},
		{"unknown flag", []string{"-frob"}, exitUsage, nil, []string{"flag provided but not defined: -frob", "loom serve -h"}},
		{"serve argument", []string{"serve", "extra"}, exitUsage, nil, []string{`serve takes no arguments, got "extra"`}},
		{"version argument", []string{"version", "extra"}, exitUsage, nil, []string{"version takes no arguments"}},
		{"migrate without a direction", []string{"migrate"}, exitUsage, nil, []string{"want up or status"}},
		{"prices unknown", []string{"prices", "frob"}, exitUsage, nil, []string{`unknown command "frob"`}},
		{"prices bad flag", []string{"prices", "check", "-frob"}, exitUsage, nil, []string{"flag provided but not defined: -frob"}},
		{"deadletter argument", []string{"deadletter", "extra"}, exitUsage, nil, []string{`bad arguments ["extra"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cwd := t.TempDir()
			c := runChild(t, cwd, serverEnv(), tt.args...)
			if code := c.wait(t); code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstderr:\n%s", code, tt.wantCode, c.errOut.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(c.out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, c.out.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(c.errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, c.errOut.String())
				}
			}
			if strings.Count(c.errOut.String(), "flag provided but not defined") > 1 {
				t.Errorf("error printed twice:\n%s", c.errOut.String())
			}
			if got := dirEntries(t, cwd); len(got) != 0 || strings.Contains(c.errOut.String(), "listening") {
				t.Errorf("%v wrote %v or listened:\n%s", tt.args, got, c.errOut.String())
			}
		})
	}
}

// Each bad setting is refused before anything is written, with a message naming it.
func TestBadSettingsRefused(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(secretFile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want []string // substrings of stderr
	}{
		{"addr without port", []string{"-addr", "localhost"}, nil, []string{"-addr (LOOM_ADDR)", `"localhost" is not host:port`}},
		{"addr port out of range", nil, []string{"LOOM_ADDR=:99999"}, []string{"-addr (LOOM_ADDR)", "0 to 65535"}},
		{"pprof addr", nil, []string{"LOOM_PPROF_ADDR=6060"}, []string{"LOOM_PPROF_ADDR"}},
		{"shutdown timeout", nil, []string{"LOOM_SHUTDOWN_TIMEOUT=soon"}, []string{"LOOM_SHUTDOWN_TIMEOUT", `"soon"`}},
		{"key set refresh", nil, []string{"LOOM_KEY_SET_REFRESH=-1m"}, []string{"LOOM_KEY_SET_REFRESH", `"-1m"`}},
		{"tracing boolean", nil, []string{"LOOM_TRACING=yes"}, []string{"LOOM_TRACING", "on/off, true/false or 1/0"}},
		{"strict boolean", nil, []string{"LOOM_TRACE_STRICT=enabled"}, []string{"LOOM_TRACE_STRICT"}},
		{"access log boolean", nil, []string{"LOOM_ACCESS_LOG=\xff<b>"}, []string{"LOOM_ACCESS_LOG"}},
		{"log format", nil, []string{"LOOM_LOG_FORMAT=xml"}, []string{"LOOM_LOG_FORMAT"}},
		{"log level", nil, []string{"LOOM_LOG_LEVEL=loud"}, []string{"LOOM_LOG_LEVEL"}},
		{"master key", nil, []string{"LOOM_MASTER_KEY=c2hvcnQ="}, []string{"LOOM_MASTER_KEY"}},
		{"ledger key", nil, []string{"LOOM_LEDGER_KEY=PRIVATE+KEY+nope"}, []string{"LOOM_LEDGER_KEY: not a checkpoint signing key"}},
		{"bootstrap key", nil, []string{"LOOM_BOOTSTRAP_KEY=sk-not-a-loom-key-at-all"}, []string{"LOOM_BOOTSTRAP_KEY", `"loom_"`}},
		{"database url", nil, []string{"DATABASE_URL=mysql://x", "LOOM_MASTER_KEY=" + testMasterKey}, []string{"DATABASE_URL: not a PostgreSQL connection string"}},
		{"database url, password not shown", nil, []string{"DATABASE_URL=postgres://u:hunter2secret@h:99999/db", "LOOM_MASTER_KEY=" + testMasterKey}, []string{"DATABASE_URL", "invalid port"}},
		{"database needs master key", nil, []string{"DATABASE_URL=postgres://postgres@127.0.0.1:1/x"}, []string{"LOOM_MASTER_KEY is required with DATABASE_URL"}},
		{"openai base url", nil, []string{"OPENAI_BASE_URL=api.example.com/v1"}, []string{"OPENAI_BASE_URL", "not an http:// or https:// URL"}},
		{"anthropic base url", nil, []string{"ANTHROPIC_API_KEY=x", "ANTHROPIC_BASE_URL=<html>"}, []string{"ANTHROPIC_BASE_URL"}},
		{"azure without key", nil, []string{"AZURE_OPENAI_ENDPOINT=https://x.openai.azure.com"}, []string{"AZURE_OPENAI_API_KEY"}},
		{"prices file missing", nil, []string{"LOOM_PRICES_FILE=/nonexistent/prices.json"}, []string{"LOOM_PRICES_FILE"}},
		{"prices file broken", nil, []string{"LOOM_PRICES_FILE=" + secretFile}, []string{"LOOM_PRICES_FILE"}},
		{"two bad values, both named", nil, []string{"LOOM_TRACING=2", "LOOM_LOG_FORMAT=yaml"}, []string{"LOOM_TRACING", "LOOM_LOG_FORMAT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"-data", dataDir}, tt.args...)
			if !slices.Contains(tt.args, "-addr") && !slices.ContainsFunc(tt.env, func(kv string) bool { return strings.HasPrefix(kv, "LOOM_ADDR=") }) {
				args = append(args, "-addr", "127.0.0.1:0")
			}
			c := runChild(t, t.TempDir(), serverEnv(tt.env...), args...)
			if code := c.wait(t); code != exitError {
				t.Errorf("exit code %d, want %d", code, exitError)
			}
			for _, w := range tt.want {
				if !strings.Contains(c.errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, c.errOut.String())
				}
			}
			if strings.Contains(c.errOut.String(), "hunter2secret") {
				t.Errorf("a password was echoed:\n%s", c.errOut.String())
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was created before the settings were checked (%v): %v", err, dirEntries(t, dataDir))
			}
		})
	}
}

// The boolean settings accept one set of spellings.
func TestParseBool(t *testing.T) {
	for _, v := range []string{"on", "true", "1", "ON", "True"} {
		if got, err := parseBool(v, false); err != nil || !got {
			t.Errorf("parseBool(%q) = %v, %v; want true", v, got, err)
		}
	}
	for _, v := range []string{"off", "false", "0", "OFF"} {
		if got, err := parseBool(v, true); err != nil || got {
			t.Errorf("parseBool(%q) = %v, %v; want false", v, got, err)
		}
	}
	if _, err := parseBool("yes", false); err == nil {
		t.Error(`parseBool("yes") accepted`)
	}
}

// The access log is one JSON line per request with the request's facts and no secret; all
// of stderr is JSON lines with timestamps. LOOM_ACCESS_LOG=off turns it off.
func TestAccessLogJSON(t *testing.T) {
	const key = "loom_accesslog0123456789abcdef"
	const prompt = "a prompt that must not be logged"
	c := startChild(t, t.TempDir(), serverEnv("LOOM_BOOTSTRAP_KEY="+key, "LOOM_LOG_FORMAT=json"))
	traceID := chat(t, c.addr, key, prompt)
	resp, err := http.Post("http://"+c.addr+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /healthz: %d, Allow %q; want 405 with Allow: GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	c.terminate(t)

	type line struct {
		Time     time.Time `json:"time"`
		Level    string    `json:"level"`
		Msg      string    `json:"msg"`
		Method   string    `json:"method"`
		Path     string    `json:"path"`
		Status   int       `json:"status"`
		Model    string    `json:"model"`
		Provider string    `json:"provider"`
		TenantID string    `json:"tenant_id"`
		KeyID    string    `json:"key_id"`
		Latency  *int64    `json:"latency"`
		Overhead *int64    `json:"overhead"`
		BytesIn  int64     `json:"bytes_in"`
		BytesOut int64     `json:"bytes_out"`
		TraceID  string    `json:"trace_id"`
	}
	var requests []line
	stderr := c.errOut.String()
	for _, raw := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var l line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("stderr line is not JSON (%v): %s", err, raw)
		}
		if l.Time.IsZero() {
			t.Errorf("line without a timestamp: %s", raw)
		}
		if l.Msg == "request" {
			requests = append(requests, l)
		}
	}
	if len(requests) != 2 {
		t.Fatalf("%d access log lines, want 2:\n%s", len(requests), stderr)
	}
	got := requests[0]
	if got.TenantID == "" || got.KeyID == "" || got.Latency == nil || got.Overhead == nil || got.BytesIn == 0 || got.BytesOut == 0 {
		t.Errorf("access log line lacks facts: %+v", got)
	}
	got.Time, got.TenantID, got.KeyID, got.Latency, got.Overhead, got.BytesIn, got.BytesOut = time.Time{}, "", "", nil, nil, 0, 0
	want := line{Level: "INFO", Msg: "request", Method: "POST", Path: "/v1/chat/completions", Status: 200, Model: "mock-1", Provider: "mock", TraceID: traceID}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("access log line (-want +got):\n%s", diff)
	}
	if h := requests[1]; h.Path != "/healthz" || h.Status != http.StatusMethodNotAllowed {
		t.Errorf("second line %+v, want POST /healthz 405", h)
	}
	for _, secret := range []string{key, prompt, key[len("loom_"):]} {
		if strings.Contains(stderr, secret) {
			t.Errorf("stderr holds %q:\n%s", secret, stderr)
		}
	}

	off := startChild(t, t.TempDir(), serverEnv("LOOM_BOOTSTRAP_KEY="+key, "LOOM_ACCESS_LOG=off"))
	chat(t, off.addr, key, "quiet")
	off.terminate(t)
	if strings.Contains(off.errOut.String(), "msg=request") {
		t.Errorf("access log written with LOOM_ACCESS_LOG=off:\n%s", off.errOut.String())
	}
}

// A second signal ends a shutdown that waits for a request, saying what is in flight.
func TestSecondSignalForcesExit(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	up := newBlockingUpstream(t, arrived, release)
	const key = "loom_secondsignal0123456789ab"
	c := startChild(t, t.TempDir(), serverEnv("LOOM_BOOTSTRAP_KEY="+key, "OPENAI_BASE_URL="+up+"/v1", "LOOM_OPENAI_MODELS=gpt-4o-mini"))
	go func() {
		cl := chatClient(c.addr, key)
		cl.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hang")},
		}, option.WithRequestTimeout(time.Minute))
	}()
	<-arrived
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(c.errOut.String(), "shutting down") })
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t); code != exitError {
		t.Errorf("exit code %d after a second signal, want %d", code, exitError)
	}
	if msg := c.errOut.String(); !strings.Contains(msg, "second signal: exiting now") || !strings.Contains(msg, "in_flight=1") {
		t.Errorf("the forced exit does not say what was in flight:\n%s", msg)
	}
	close(release)
}

// migrate up applies every migration to the store serve would use, status lists them, and
// neither serves.
func TestMigrate(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		st := runChild(t, "", serverEnv(), "migrate", "status", "-data", dataDir)
		if code := st.wait(t); code != exitError || !strings.Contains(st.errOut.String(), "no store at") {
			t.Errorf("status of a missing store: exit %d\n%s", code, st.errOut.String())
		}
		up := runChild(t, "", serverEnv(), "migrate", "up", "-data", dataDir)
		if code := up.wait(t); code != exitOK {
			t.Fatalf("migrate up: exit %d\n%s", code, up.errOut.String())
		}
		checkAllApplied(t, up.out.String(), "sqlite")
		st = runChild(t, "", serverEnv(), "migrate", "status", "-data", dataDir)
		if code := st.wait(t); code != exitOK {
			t.Fatalf("migrate status: exit %d\n%s", code, st.errOut.String())
		}
		if diff := cmp.Diff(up.out.String(), st.out.String()); diff != "" {
			t.Errorf("status after up (-want +got):\n%s", diff)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.New(t)
		up := runChild(t, "", serverEnv("DATABASE_URL="+url), "migrate", "up")
		if code := up.wait(t); code != exitOK {
			t.Fatalf("migrate up: exit %d\n%s", code, up.errOut.String())
		}
		checkAllApplied(t, up.out.String(), "postgres")
	})
}

func checkAllApplied(t *testing.T, out, dialect string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf("no migrations listed")
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, dialect+" ") || !strings.HasSuffix(l, " applied") {
			t.Errorf("migration line %q, want %s … applied", l, dialect)
		}
	}
}

// Suspicious but usable settings start with a warning naming them; old names still work.
func TestSettingWarnings(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
		// check inspects the parsed config.
		check func(config) string
	}{
		{"base URL without /v1", map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:9/api"},
			[]string{"OPENAI_BASE_URL http://127.0.0.1:9/api does not end in /v1: requests go to http://127.0.0.1:9/api/chat/completions, which most OpenAI-compatible servers answer 404"}, nil},
		{"base URL with /v1", map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"}, nil, nil},
		{"deprecated Azure deployments", map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x.example", "AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_DEPLOYMENTS": "d1, d2"},
			[]string{"AZURE_OPENAI_DEPLOYMENTS is deprecated: use LOOM_AZURE_MODELS"},
			func(c config) string { return cmp.Diff([]string{"d1", "d2"}, c.AzureModels) }},
		{"new name wins", map[string]string{"LOOM_AZURE_MODELS": "new", "AZURE_OPENAI_DEPLOYMENTS": "old"}, nil,
			func(c config) string { return cmp.Diff([]string{"new"}, c.AzureModels) }},
		{"strict true", map[string]string{"LOOM_TRACE_STRICT": "true"}, nil,
			func(c config) string { return cmp.Diff(true, c.StrictTraces) }},
		{"shutdown timeout from the environment", map[string]string{"LOOM_SHUTDOWN_TIMEOUT": "2m"}, nil,
			func(c config) string { return cmp.Diff(2*time.Minute, c.ShutdownTimeout) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig([]string{"-data", t.TempDir()}, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, c.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if tt.check != nil {
				if diff := tt.check(c); diff != "" {
					t.Errorf("config (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// An upstream failure is logged with the upstream's base URL, so a wrong OPENAI_BASE_URL is
// found from the log.
func TestUpstreamFailureNamesUpstream(t *testing.T) {
	const key = "loom_upstreamfailure0123456789"
	env := map[string]string{"LOOM_BOOTSTRAP_KEY": key, "OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "LOOM_OPENAI_MODELS": "gpt-4o-mini"}
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s, logs, closeServer := startServer(t, cfg, io.Discard)
	cl := chatClient(s.Addr, key)
	_, err = cl.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway {
		t.Fatalf("err %v, want 502", err)
	}
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`msg="upstream failure" status=502 provider=openai upstream=http://127.0.0.1:1/v1`,
		`msg=route name=openai upstream=http://127.0.0.1:1/v1 models=gpt-4o-mini`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// runCommand runs the CLI in-process with args and no environment, writing its stdout to
// out; a non-zero exit code is an error holding its stderr.
func runCommand(out io.Writer, args ...string) error {
	var stderr strings.Builder
	if code := cli(args, stdio{getenv: noEnv, stdout: out, stderr: &stderr}); code != exitOK {
		return fmt.Errorf("%v: exit code %d: %s", args, code, stderr.String())
	}
	return nil
}
