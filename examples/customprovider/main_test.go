package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/loom-gateway/loom/provider"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "200 OK\n") || !strings.Contains(out.String(), provider.MockReply("hello")) {
		t.Errorf("output = %s", out.String())
	}
}

// stub answers with a fixed error.
type stub struct{ err error }

func (s stub) Chat(context.Context, *provider.Request) (*provider.Response, error) { return nil, s.err }

func TestFallback(t *testing.T) {
	second := errors.New("secondary called")
	tests := []struct {
		name    string
		primary error
		want    error
	}{
		{"unreachable", errors.New("dial tcp: refused"), second},
		{"overloaded", &provider.UpstreamError{StatusCode: http.StatusServiceUnavailable}, second},
		{"rate limited", &provider.UpstreamError{StatusCode: http.StatusTooManyRequests}, second},
		{"bad request stays", &provider.UpstreamError{StatusCode: http.StatusBadRequest}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Fallback{stub{tt.primary}, stub{second}}.Chat(context.Background(), &provider.Request{})
			want := tt.want
			if want == nil {
				want = tt.primary
			}
			if err != want {
				t.Errorf("err = %v, want %v", err, want)
			}
		})
	}
}
