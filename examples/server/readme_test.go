package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/loom-gateway/loom/provider"
)

// The README's quickstart, run as written: the server started the way it says (with its
// LOOM_BOOTSTRAP_KEY, in a fresh directory, so ./loom-data is the store), then its curl
// commands, with localhost:8080 pointed at the test's port.
func TestREADMEQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## The two commands")
	section, _, _ = strings.Cut(section, "Run the tests")
	if !strings.Contains(section, "```sh\ngo run ./examples/server\n```") {
		t.Fatalf("the quickstart no longer says go run ./examples/server:\n%s", section)
	}
	m := regexp.MustCompile("`LOOM_BOOTSTRAP_KEY=(\\S+) go run ./examples/server`").FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("no LOOM_BOOTSTRAP_KEY example in the quickstart:\n%s", section)
	}
	key := m[1]
	blocks := regexp.MustCompile("(?s)```sh\n(curl .*?)```").FindStringSubmatch(section)
	if blocks == nil {
		t.Fatalf("no curl block in the quickstart:\n%s", section)
	}
	commands := strings.Split(strings.ReplaceAll(blocks[1], "\\\n", ""), "\n")

	cwd := t.TempDir()
	c := runChild(t, cwd, serverEnv("LOOM_BOOTSTRAP_KEY="+key), "-addr", "127.0.0.1:0")
	waitFor(t, 30*time.Second, func() bool { return listeningLine.MatchString(c.errOut.String()) })
	addr := listeningLine.FindStringSubmatch(c.errOut.String())[1]
	var outputs []string
	for _, cmd := range commands {
		if strings.TrimSpace(cmd) == "" {
			continue
		}
		sh := exec.Command("sh", "-c", strings.ReplaceAll(cmd, "localhost:8080", addr))
		sh.Env = append(os.Environ(), "KEY="+key)
		out, err := sh.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		outputs = append(outputs, string(out))
	}
	if len(outputs) != 2 {
		t.Fatalf("%d commands ran, want 2: %q", len(outputs), commands)
	}
	var answer struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(outputs[0]), &answer); err != nil || len(answer.Choices) != 1 || answer.Choices[0].Message.Content != provider.MockReply("hello") {
		t.Errorf("first command answered %q (%v)", outputs[0], err)
	}
	var streamed strings.Builder
	for _, line := range strings.Split(outputs[1], "\n") {
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" && json.Unmarshal([]byte(data), &chunk) == nil && len(chunk.Choices) > 0 {
			streamed.WriteString(chunk.Choices[0].Delta.Content)
		}
	}
	if streamed.String() != provider.MockReply("hello") || !strings.HasSuffix(strings.TrimSpace(outputs[1]), "data: [DONE]") {
		t.Errorf("second command streamed %q", outputs[1])
	}
	c.terminate(t)
	if _, err := os.Stat(filepath.Join(cwd, "loom-data", "loom.db")); err != nil {
		t.Errorf("the default data directory ./loom-data was not used: %v", err)
	}
}
