package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/sqlitedb"
)

// The README's embedding section shows this program, whole and as it is.
func TestREADMEShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Embedding Loom in your own server")
	_, block, ok2 := strings.Cut(section, "```go\n")
	block, _, ok3 := strings.Cut(block, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no go block in its embedding section")
	}
	if diff := cmp.Diff(string(src), block); diff != "" {
		t.Errorf("README embedding snippet differs from examples/embed/main.go (-file +README):\n%s", diff)
	}
}

// lockedBuffer is the program's stdout, read while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
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

// The program serves chat completions with the key it prints, through the OpenAI SDK, and
// leaves the trace in loom.db when it stops.
func TestEmbedRuns(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fixtures", "openai_chat_nonstream_usage.json"))
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-upstream" {
			http.Error(w, "wrong path or key", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(fixture)
	}))
	defer upstream.Close()
	master, err := loomcrypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LOOM_MASTER_KEY": master, "OPENAI_BASE_URL": upstream.URL + "/v1", "OPENAI_API_KEY": "sk-upstream", "ADDR": "127.0.0.1:0"}
	t.Chdir(t.TempDir())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, &out) }()
	started := regexp.MustCompile(`API key: (\S+)\nOpenAI base URL: (\S+)\n`)
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("run returned before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no key and base URL printed:\n%s", out.String())
		}
		m = started.FindStringSubmatch(out.String())
	}
	client := openai.NewClient(option.WithBaseURL(m[2]), option.WithAPIKey(m[1]), option.WithMaxRetries(0))
	got, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("4200 + 42?")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != `\(4200 + 42 = 4242\).` {
		t.Errorf("answer %+v", got.Choices)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	db, err := sqlitedb.Open(context.Background(), "loom.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var tokens int64
	if err := db.QueryRow("SELECT count(*), coalesce(sum(prompt_tokens), 0) FROM traces").Scan(&n, &tokens); err != nil {
		t.Fatal(err)
	}
	if n != 1 || tokens != 16 {
		t.Errorf("%d traces with %d prompt tokens, want 1 with 16", n, tokens)
	}
}
