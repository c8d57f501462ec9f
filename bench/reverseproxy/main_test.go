package main

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestNewProxyRejects(t *testing.T) {
	for _, bad := range []string{"", "127.0.0.1:9090", "ftp://host", "http://"} {
		if _, err := newProxy(bad); err == nil {
			t.Errorf("upstream %q accepted", bad)
		}
	}
}

// TestProxyFlushesEachWrite checks that a stream's first event reaches the client while
// the upstream is still holding the second one back.
func TestProxyFlushesEachWrite(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: one\n\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte("data: [DONE]\n\n"))
	}))
	defer up.Close()
	defer close(release)

	p, err := newProxy(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()

	resp, err := http.Post(front.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(resp.Body).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if l != "data: one\n" {
			t.Errorf("first line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first event not flushed through the proxy")
	}
}

// TestFullDuplex checks that the request body can still be read once the response has
// started, which the transport may do while the proxy copies the upstream's answer.
func TestFullDuplex(t *testing.T) {
	got := make(chan string, 1)
	front := httptest.NewServer(fullDuplex(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
	})))
	defer front.Close()
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b := <-got; b != `{"model":"m"}` {
		t.Errorf("body read after the response started: %q", b)
	}
}
