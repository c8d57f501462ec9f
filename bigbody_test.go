package loom_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/loom-gateway/loom"
)

// A client that writes its whole oversized body before it reads (curl without Expect,
// Python's requests) gets the 413 JSON, not a connection reset: with the length declared
// and without (chunked).
func TestOversizedBodyWrittenFirst(t *testing.T) {
	// The default limit: what an old gateway left unread must exceed what the sockets buffer.
	const limit = 8 << 20
	e := newEnv(t, nil, func(c *loom.Config) { c.MaxBodyBytes = limit })
	body := `{"model":"gpt-4o","messages":[],"pad":"` + strings.Repeat("x", 2*limit-100) + `"}`
	chunked := func(b string) string {
		var sb strings.Builder
		for len(b) > 0 {
			n := min(len(b), 32<<10)
			fmt.Fprintf(&sb, "%x\r\n%s\r\n", n, b[:n])
			b = b[n:]
		}
		return sb.String() + "0\r\n\r\n"
	}
	for _, tt := range []struct {
		name    string
		framing string // the length header
		payload string
	}{
		{"content-length", fmt.Sprintf("Content-Length: %d", len(body)), body},
		{"chunked", "Transfer-Encoding: chunked", chunked(body)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "POST /v1/chat/completions HTTP/1.1\r\nHost: loom\r\nAuthorization: Bearer " + e.key +
				"\r\nContent-Type: application/json\r\n" + tt.framing + "\r\n\r\n" + tt.payload
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatalf("writing the whole request: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			defer resp.Body.Close()
			var got errorBody
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge || got.Error.Code == nil || *got.Error.Code != "request_too_large" {
				t.Errorf("status %d, error %+v; want 413 request_too_large", resp.StatusCode, got.Error)
			}
		})
	}
}
