package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// childEnv, when set, makes the test binary run the server (run with its arguments) instead
// of the tests: the crash test starts the real server in a child process it can SIGKILL.
const childEnv = "LOOM_TEST_SERVER_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

func noEnv(string) string { return "" }

func chatClient(addr, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL("http://"+addr+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// chat sends a non-streaming request for the mock model and returns the trace id.
func chat(t *testing.T, addr, key, prompt string) string {
	t.Helper()
	var hr *http.Response
	c := chatClient(addr, key)
	got, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "mock-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}, option.WithResponseInto(&hr))
	if err != nil {
		t.Fatal(err)
	}
	if want := provider.MockReply(prompt); len(got.Choices) != 1 || got.Choices[0].Message.Content != want {
		t.Errorf("answer %+v, want %q", got.Choices, want)
	}
	return hr.Header.Get("X-Request-Id")
}

func TestQuickstart(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", dir}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, logs, closeServer := startServer(t, cfg, &out)
	key := s.BootstrapKey
	if !strings.HasPrefix(key, "loom_") || !strings.Contains(out.String(), key) {
		t.Fatalf("bootstrap key %q not printed:\n%s", key, out.String())
	}
	if strings.Contains(logs.String(), key) {
		t.Errorf("the bootstrap key is in the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `serving the built-in mock provider as model \"mock-1\"`) {
		t.Errorf("no mock notice:\n%s", logs.String())
	}
	fi, err := os.Stat(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("master key file mode %v, want 0600", fi.Mode().Perm())
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + s.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}

	ids := []string{chat(t, s.Addr, key, "hello quickstart")}
	c := chatClient(s.Addr, key)
	var hr *http.Response
	st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "mock-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")},
	}, option.WithResponseInto(&hr))
	var content strings.Builder
	for st.Next() {
		if ch := st.Current(); len(ch.Choices) > 0 {
			content.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if want := provider.MockReply("stream please"); content.String() != want {
		t.Errorf("streamed %q, want %q", content.String(), want)
	}
	ids = append(ids, hr.Header.Get("X-Request-Id"))

	// Both traces are counted in /metrics once flushed (the stream's trace is recorded as
	// its handler returns, just after the client read the end); nothing is lost.
	var metrics []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := s.Gateway.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + s.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(metrics), "\nloom_traces_written_total 2\n") {
			break
		}
	}
	for _, want := range []string{"\nloom_traces_recorded_total 2\n", "\nloom_traces_written_total 2\n", "\nloom_traces_lost_total{reason=\"queue_full\"} 0\n",
		"\n# TYPE go_goroutines gauge\n", "\n# TYPE process_resident_memory_bytes gauge\n", "\n# TYPE loom_overhead_seconds histogram\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}

	if err := closeServer(); err != nil {
		t.Fatalf("close: %v", err)
	}
	keyFile, err := os.ReadFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := loomcrypto.ParseKeyring(strings.TrimSpace(string(keyFile)))
	if err != nil {
		t.Fatal(err)
	}
	checkSQLiteTraces(t, filepath.Join(dir, "loom.db"), keyring, ids)

	// A second start on the same data: no new key, no new master key, the first key works.
	out.Reset()
	cfg.BootstrapKey = "loom_ignoredbecausekeysexist0123"
	s2, logs2, closeServer2 := startServer(t, cfg, &out)
	if !strings.Contains(logs2.String(), "LOOM_BOOTSTRAP_KEY ignored: the store already has API keys") {
		t.Errorf("no notice that LOOM_BOOTSTRAP_KEY was ignored:\n%s", logs2.String())
	}
	if s2.BootstrapKey != "" || out.Len() != 0 || strings.Contains(logs2.String(), "created") {
		t.Errorf("second start made new keys (bootstrap %q):\n%s%s", s2.BootstrapKey, out.String(), logs2.String())
	}
	ids = append(ids, chat(t, s2.Addr, key, "hello again"))
	if err := closeServer2(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkSQLiteTraces(t, filepath.Join(dir, "loom.db"), keyring, ids)
}

// startServer starts the server in-process, logging to the returned buffer; the returned
// func closes it (once: a second Server.Close would wait forever for the serve loop's
// result) and runs at cleanup too.
func startServer(t *testing.T, cfg config, out io.Writer) (*Server, *lockedBuffer, func() error) {
	t.Helper()
	logs := &lockedBuffer{}
	s, err := Start(context.Background(), cfg, out, newLogger(cfg, logs))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var closeErr error
	closeServer := func() error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			closeErr = s.Close(ctx)
		})
		return closeErr
	}
	t.Cleanup(func() { closeServer() })
	return s, logs, closeServer
}

// checkSQLiteTraces checks that the database holds exactly the traces ids, with bodies that
// open with keyring.
func checkSQLiteTraces(t *testing.T, path string, keyring *loomcrypto.Keyring, ids []string) {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keyring = keyring.WithDataKeys(tenancy.NewSQLiteStore(db)) // the server seals with data keys
	rows, err := db.Query("SELECT id, tenant_id, status, key_version, request_sealed FROM traces")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var (
			id, tenant      string
			status, version int
			sealed          []byte
		)
		if err := rows.Scan(&id, &tenant, &status, &version, &sealed); err != nil {
			t.Fatal(err)
		}
		got[id] = true
		if status != http.StatusOK {
			t.Errorf("trace %s: status %d", id, status)
		}
		if version != loomcrypto.FirstDataKeyVersion {
			t.Errorf("trace %s: key version %d, want the tenant's data key (%d)", id, version, loomcrypto.FirstDataKeyVersion)
		}
		if _, err := keyring.Open(tenant, tracing.BodyRecordID(id, tracing.BodyRequest), version, sealed); err != nil {
			t.Errorf("trace %s: request body does not open with the key file: %v", id, err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Errorf("%d traces, want %d", len(got), len(ids))
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("no trace for request %s", id)
		}
	}
}

// TestCrashLosesNoTrace: traces answered before a SIGKILL, while the trace store was
// unreachable, reach the store once after a restart replays the spool.
func TestCrashLosesNoTrace(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	direct, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	count := func() (n, distinct int) {
		t.Helper()
		err := direct.QueryRow(ctx, "SELECT count(*), count(DISTINCT id) FROM traces").Scan(&n, &distinct)
		if err != nil {
			t.Fatal(err)
		}
		return n, distinct
	}
	proxy := pgtest.NewProxy(t)
	masterKey, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	key := "loom_" + hex.EncodeToString([]byte("crash-test-bootstrap-key"))
	env := serverEnv("DATABASE_URL="+proxy.URL(t, dbURL), "LOOM_MASTER_KEY="+masterKey, "LOOM_BOOTSTRAP_KEY="+key)
	dataDir := t.TempDir()

	c1 := startChild(t, dataDir, env)
	// The first answer caches the key and the routes: from then on, requests need no database.
	ids := []string{chat(t, c1.addr, key, "before the outage")}
	waitFor(t, 20*time.Second, func() bool { n, _ := count(); return n == 1 })

	proxy.Cut()
	const n = 10
	for i := 1; i < n; i++ {
		ids = append(ids, chat(t, c1.addr, key, fmt.Sprintf("during the outage %d", i)))
	}
	time.Sleep(100 * time.Millisecond) // well past the 5ms group commit: every answer is in the spool
	if got, _ := count(); got != 1 {
		t.Fatalf("%d traces reached the store through a cut proxy", got)
	}
	c1.kill(t)
	proxy.Restore()

	c2 := startChild(t, dataDir, env)
	waitFor(t, 30*time.Second, func() bool { got, _ := count(); return got >= n })
	c2.terminate(t)
	if got, distinct := count(); got != n || distinct != n {
		t.Fatalf("count(*) = %d, count(DISTINCT id) = %d; want %d", got, distinct, n)
	}
	rows, err := direct.Query(ctx, "SELECT id::text FROM traces")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !stored[id] {
			t.Errorf("request %s was answered but its trace is not stored", id)
		}
	}
	// The rollups count every stored trace once, in every grain of both tables, however
	// the crash and the replay split the batches, once what the server left unfolded is
	// folded.
	if _, err := rollup.PostgresFolder(direct).All(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := direct.Query(ctx, `SELECT 'full', grain_s, sum(requests)::int FROM trace_rollups GROUP BY 2
		UNION ALL SELECT 'total', grain_s, sum(requests)::int FROM trace_rollup_totals GROUP BY 2`)
	if err != nil {
		t.Fatal(err)
	}
	grains := 0
	for r.Next() {
		var (
			table       string
			grain, reqs int
		)
		if err := r.Scan(&table, &grain, &reqs); err != nil {
			t.Fatal(err)
		}
		grains++
		if reqs != n {
			t.Errorf("%s rollups of grain %ds count %d requests, want %d", table, grain, reqs, n)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if grains != 8 {
		t.Errorf("rollups of %d (table, grain) pairs, want 8", grains)
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverEnv is this process's environment without any Loom or upstream setting, plus extra
// and the child marker.
func serverEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LOOM_") || strings.HasPrefix(k, "OPENAI_") || strings.HasPrefix(k, "AZURE_") ||
			strings.HasPrefix(k, "ANTHROPIC_") || k == "DATABASE_URL" {
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, childEnv+"=1"), extra...)
}

// child is the server running in a child process.
type child struct {
	cmd    *exec.Cmd
	addr   string
	out    *lockedBuffer
	errOut *lockedBuffer
	exited chan struct{} // closed once the process has been waited for
	err    error         // the exit status, once exited is closed
}

var listeningLine = regexp.MustCompile(`listening on http://(\S+) `)

func startChild(t *testing.T, dataDir string, env []string) *child {
	t.Helper()
	c := runChild(t, "", env, "-addr", "127.0.0.1:0", "-data", dataDir)
	deadline := time.After(30 * time.Second)
	for {
		if m := listeningLine.FindStringSubmatch(c.errOut.String()); m != nil {
			c.addr = m[1]
			return c
		}
		select {
		case <-c.exited:
			t.Fatalf("server exited before listening: %v\nstderr:\n%s", c.err, c.errOut.String())
		case <-deadline:
			t.Fatalf("server did not log its address\nstdout:\n%s\nstderr:\n%s", c.out.String(), c.errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// runChild starts the server binary (this test binary as a child) with args, in the
// working directory dir ("" for this one).
func runChild(t *testing.T, dir string, env []string, args ...string) *child {
	t.Helper()
	c := &child{out: &lockedBuffer{}, errOut: &lockedBuffer{}, exited: make(chan struct{})}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Dir = dir
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.errOut
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("server %d stdout:\n%s\nstderr:\n%s", c.cmd.Process.Pid, c.out.String(), c.errOut.String())
		}
	})
	return c
}

// wait waits for the child to exit by itself and returns its exit code.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not exit\nstderr:\n%s", c.cmd.Args, c.errOut.String())
	}
	return c.cmd.ProcessState.ExitCode()
}

// kill ends the server with SIGKILL: no shutdown, no flush.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
}

// terminate asks the server to shut down gracefully and checks that it exits cleanly.
func (c *child) terminate(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("server exit: %v\nstderr:\n%s", c.err, c.errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A start that stopped between making the tenant and its key resumes: the next bootstrap
// puts the key into that tenant instead of finding "a tenant exists" and making none.
func TestBootstrapResumes(t *testing.T) {
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		t.Fatal(err)
	}
	admin := tenancy.NewService(tenancy.NewSQLiteStore(db), nil)
	half, err := admin.CreateTenant(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const given = "loom_resumedbootstrap0123456789"
	got, err := bootstrap(ctx, admin, given, io.Discard, log)
	if err != nil || got != given {
		t.Fatalf("bootstrap = %q, %v; want the given key", got, err)
	}
	tenants, err := admin.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := admin.ListKeys(ctx, half.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tenants) != 1 || len(keys) != 1 || keys[0].Hash != tenancy.HashKey(given) {
		t.Errorf("tenants %+v, keys of %q %+v; want one tenant holding the given key", tenants, half.ID, keys)
	}
	// Once a key exists, nothing more is made.
	if again, err := bootstrap(ctx, admin, "", io.Discard, log); err != nil || again != "" {
		t.Errorf("second bootstrap = %q, %v; want nothing made", again, err)
	}
}

// TestReadyzDegraded: with PostgreSQL cut off, a replica that has read keys says it is
// degraded but stays ready (200), and keeps answering, even with a key it never used
// (the key set, on by default).
func TestReadyzDegraded(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	proxy := pgtest.NewProxy(t)
	masterKey, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	key := "loom_" + hex.EncodeToString([]byte("readyz-test-bootstrap-key"))
	getenv := func(k string) string {
		return map[string]string{"DATABASE_URL": proxy.URL(t, dbURL), "LOOM_MASTER_KEY": masterKey, "LOOM_BOOTSTRAP_KEY": key}[k]
	}
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	s, _, closeServer := startServer(t, cfg, io.Discard)
	second, _, err := s.Gateway.Admin().CreateKey(ctx, mustTenantID(t, s), "never used")
	if err != nil {
		t.Fatal(err)
	}
	// The key set is read at start and every minute: read it again now that it holds
	// the second key, by starting a second server on the same database.
	closeServer()
	s, _, closeServer = startServer(t, cfg, io.Discard)
	chat(t, s.Addr, key, "before the outage")

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("GET /readyz, store up: %d %q, want 200 \"ready\\n\"", code, body)
	}
	proxy.Cut()
	if code, body := get("/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "degraded: store unreachable") {
		t.Errorf("GET /readyz, store cut: %d %q, want 200 degraded", code, body)
	}
	chat(t, s.Addr, key, "during the outage")
	chat(t, s.Addr, second, "during the outage, a key never used")
	if _, body := get("/metrics"); !strings.Contains(body, "\nloom_auth_key_set_keys 2\n") || !strings.Contains(body, "\nloom_auth_served_stale_total ") {
		t.Errorf("/metrics lacks the store counters:\n%s", body)
	}
	proxy.Restore()
	if err := closeServer(); err != nil {
		t.Fatal(err)
	}
}

func mustTenantID(t *testing.T, s *Server) string {
	t.Helper()
	ts, err := s.Gateway.Admin().ListTenants(context.Background())
	if err != nil || len(ts) != 1 {
		t.Fatalf("ListTenants: %v, %d tenants", err, len(ts))
	}
	return ts[0].ID
}
