package sse

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReader(t *testing.T) {
	long := strings.Repeat("x", 20<<10) // longer than the read buffer
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"LF", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}},
		{"event and data lines", "event: message_start\ndata: {}\n\n", []string{"event: message_start\ndata: {}\n\n"}},
		{"stray blank lines", "\n\ndata: a\n\n\n", []string{"data: a\n\n"}},
		{"cut short", "data: a\n\ndata: b", []string{"data: a\n\n", "data: b"}},
		{"long line", "data: " + long + "\n\n", []string{"data: " + long + "\n\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in))
			var got []string
			for {
				ev, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(ev))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestData(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"one line", "data: {\"a\":1}\n\n", `{"a":1}`},
		{"no space", "data:[DONE]\n\n", "[DONE]"},
		{"CRLF", "data: x\r\n\r\n", "x"},
		{"several lines", "data: a\ndata: b\ndata: c\n\n", "a\nb\nc"},
		{"comment", ": keep-alive\n\n", ""},
		{"event line", "event: ping\ndata: {}\n\n", "{}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Data([]byte(tt.in))); got != tt.want {
				t.Errorf("Data = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReaderReady(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool // after reading the first event
	}{
		{"next event buffered", "data: a\n\ndata: b\n\n", true},
		{"next event partial", "data: a\n\ndata: b", false},
		{"only blank lines", "data: a\n\n\n\n", false},
		{"CRLF event", "data: a\r\n\r\ndata: b\r\n\r\n", true},
		{"nothing", "data: a\n\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in))
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
			if got := r.Ready(); got != tt.want {
				t.Errorf("Ready = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"event: message_start\ndata: {}\n\n": "message_start",
		"data: {}\r\nevent:ping\r\n\r\n":     "ping",
		"data: {}\n\n":                       "",
	} {
		if got := Name([]byte(in)); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}
