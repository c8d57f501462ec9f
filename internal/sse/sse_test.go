package sse

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReader(t *testing.T) {
	long := strings.Repeat("x", 20<<10)  // longer than the read buffer
	huge := strings.Repeat("y", 200<<10) // the buffer grows, then shrinks
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"LF", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}},
		{"event and data lines", "event: message_start\ndata: {}\n\n", []string{"event: message_start\ndata: {}\n\n"}},
		{"stray blank lines", "\n\ndata: a\n\n\n", []string{"\n\ndata: a\n\n"}},
		{"bare CR", "data: a\r\rdata: b\r\r", []string{"data: a\r\r", "data: b\r\r"}},
		{"mixed endings", "data: a\r\n\rdata: b\n\r\ndata: c\r\n", []string{"data: a\r\n\r", "data: b\n\r\n", "data: c\r\n"}},
		{"CR then LF", "data: a\r\n\r\n\r\n", []string{"data: a\r\n\r\n"}},
		{"cut short", "data: a\n\ndata: b", []string{"data: a\n\n", "data: b"}},
		{"long line", "data: " + long + "\n\n", []string{"data: " + long + "\n\n"}},
		{"huge event, then small ones", "data: " + huge + "\r\rdata: b\n\ndata: c\n\n", []string{"data: " + huge + "\r\r", "data: b\n\n", "data: c\n\n"}},
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
		{"bare CR", "data: a\rdata: b\r\r", "a\nb"},
		{"no colon", "data\rdata: b\n\n", "\nb"},
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
		{"bare CR event", "data: a\r\rdata: b\r\r", true},
		{"line ending in CR", "data: a\r\rdata: b\r", false},
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

// An event ended by a bare "\r" is returned at once, though a "\n" might follow.
func TestReaderBareCRNotHeldBack(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	r := NewReader(pr)
	writes := []string{"data: a\r\r", "\ndata: b\r\n\r\n"}
	want := []string{"data: a\r\r", "\ndata: b\r\n\r\n"}
	for i, w := range writes {
		go pw.Write([]byte(w)) // returns once Next has read it all
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if string(ev) != want[i] {
			t.Errorf("event %d = %q, want %q", i, ev, want[i])
		}
	}
}

func TestReaderEventTooLarge(t *testing.T) {
	r := NewReader(io.MultiReader(strings.NewReader("data: "), neverEnding('x')))
	if _, err := r.Next(); err != ErrEventTooLarge {
		t.Errorf("err = %v, want ErrEventTooLarge", err)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// referenceEvents parses an SSE stream as the WHATWG algorithm does, line by line: it
// returns each event's data lines (joined with "\n") and, as Reader does, a last event the
// stream cut short.
func referenceEvents(in string) []string {
	var out []string
	var data []string
	pending := false // the event has a line
	for len(in) > 0 {
		i := strings.IndexAny(in, "\r\n")
		line, end := in, ""
		if i >= 0 {
			line, end = in[:i], in[i:]
		}
		switch {
		case strings.HasPrefix(end, "\r\n"):
			in = end[2:]
		case end != "":
			in = end[1:]
		default:
			in = ""
		}
		if line == "" && end != "" {
			if pending {
				out = append(out, strings.Join(data, "\n"))
			}
			data, pending = nil, false
			continue
		}
		pending = true
		name, value, _ := strings.Cut(line, ":")
		if name == "data" {
			data = append(data, strings.TrimPrefix(value, " "))
		}
	}
	if pending {
		out = append(out, strings.Join(data, "\n"))
	}
	return out
}

// chunked returns b in reads of the sizes sizes gives, cycling.
type chunked struct {
	b     []byte
	sizes []byte
	i     int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%17 + 1
		c.i++
	}
	n = copy(p, c.b[:min(n, len(c.b))])
	c.b = c.b[n:]
	return n, nil
}

// FuzzReader: however the stream is split into reads, Reader's events carry the data the
// reference parser finds, and together they are the stream's bytes.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"data: a\n\ndata: b\n\n",
		"data: a\r\n\r\ndata: b\r\n\r\n",
		"data: a\r\rdata: b\r\r",
		"event: x\rdata: 1\r\ndata: 2\n\n: comment\r\r",
		"\n\r\n\rdata: a\r\n\rdata: b",
		"data\r\rdata:\r\rdata:  two spaces\n\n",
		"data: a\r",
	} {
		f.Add(s, []byte{3, 1, 7})
	}
	f.Fuzz(func(t *testing.T, in string, sizes []byte) {
		r := NewReader(&chunked{b: []byte(in), sizes: sizes})
		var got []string
		var all strings.Builder
		for {
			ev, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			all.Write(ev)
			got = append(got, string(Data(ev)))
		}
		if diff := cmp.Diff(referenceEvents(in), got); diff != "" {
			t.Errorf("data of %q (-reference +got):\n%s", in, diff)
		}
		rest, ok := strings.CutPrefix(in, all.String())
		if !ok || strings.Trim(rest, "\r\n") != "" {
			t.Errorf("events %q are not the stream %q", all.String(), in)
		}
	})
}
