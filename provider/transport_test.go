package provider

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countingServer counts the connections its clients open.
func countingServer(t *testing.T, h http.HandlerFunc, tls bool) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s, &conns
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if r.URL.Query().Get("chunked") != "" {
		w.(http.Flusher).Flush() // no Content-Length: chunked encoding
	}
	w.Write(b)
}

func TestTransportReusesConnections(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		srv, conns := countingServer(t, echo, useTLS)
		tr := &Transport{}
		if useTLS {
			tr.TLSConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
		}
		c := &http.Client{Transport: tr}
		for i, q := range []string{"", "?chunked=1", "", "?chunked=1"} {
			body := strings.Repeat("x", 100*(i+1))
			resp, err := c.Post(srv.URL+"/"+q, "text/plain", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != body {
				t.Fatalf("tls=%v request %d: got %d bytes, want %d", useTLS, i, len(got), len(body))
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("tls=%v: %d connections for 4 sequential requests, want 1", useTLS, n)
		}
		tr.CloseIdleConnections()
	}
}

// A connection the upstream closed while idle is replaced transparently.
func TestTransportRetriesClosedIdleConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}, false)
	tr := &Transport{}
	c := &http.Client{Transport: tr}
	for i := range 2 {
		resp, err := c.Post(srv.URL, "application/json", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if i == 0 {
			srv.CloseClientConnections() // the upstream drops the idle keep-alive connection
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// An abandoned body or an ended context closes the connection instead of reusing it.
func TestTransportCancel(t *testing.T) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}, false)
	defer close(release)
	c := &http.Client{Transport: &Transport{}}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("x"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	io.ReadFull(resp.Body, buf)
	cancel()
	if _, err := resp.Body.Read(buf); err == nil {
		t.Error("read after cancel succeeded")
	}
	resp.Body.Close()
	wg.Wait() // the upstream saw the connection close
	resp, err = c.Post(srv.URL, "text/plain", strings.NewReader("y"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the cancelled one must not be reused)", n)
	}
}

// TestTransportResendsOnlyWithIdempotencyKey: a reused connection the upstream closes
// after reading a request in full must not lead to a second copy of it (the upstream may
// be generating it), unless the request carries an idempotency key; a re-send is counted.
func TestTransportResendsOnlyWithIdempotencyKey(t *testing.T) {
	for _, withKey := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var received atomic.Int64
		go func() {
			for conn := 0; ; conn++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(conn int) {
					defer c.Close()
					br := bufio.NewReader(c)
					for n := 0; ; n++ {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						io.Copy(io.Discard, req.Body)
						if req.URL.Path == "/paid" {
							received.Add(1)
						}
						if conn == 0 && n == 1 {
							return // read in full, then the connection is cut
						}
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
				}(conn)
			}
		}()
		tr := &Transport{}
		c := &http.Client{Transport: tr}
		resp, err := c.Post("http://"+ln.Addr().String()+"/warm", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		var retries atomic.Int32
		req, _ := http.NewRequestWithContext(CountRetries(context.Background(), &retries), http.MethodPost,
			"http://"+ln.Addr().String()+"/paid", strings.NewReader(`{"model":"m"}`))
		if withKey {
			req.Header.Set("Idempotency-Key", "k-1")
		}
		resp, err = c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		got := []any{err == nil, received.Load(), retries.Load()}
		want := []any{false, int64(1), int32(0)}
		if withKey {
			want = []any{true, int64(2), int32(1)}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("idempotency key %v: succeeded, upstream copies, retries counted (-want +got):\n%s", withKey, diff)
		}
		ln.Close()
		tr.CloseIdleConnections()
	}
}
