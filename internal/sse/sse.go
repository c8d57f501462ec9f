// Package sse reads text/event-stream bodies event by event, for the stream relay and for
// provider adapters that translate an upstream's events.
package sse

import (
	"bufio"
	"bytes"
	"io"
)

// Reader splits a text/event-stream body into events.
type Reader struct {
	br  *bufio.Reader
	buf []byte
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 8<<10), buf: make([]byte, 0, 1<<10)}
}

// Ready reports whether a whole next event is already buffered, so Next will return it
// without waiting on the underlying reader.
func (r *Reader) Ready() bool {
	b, _ := r.br.Peek(r.br.Buffered())
	b = bytes.TrimLeft(b, "\r\n") // blank lines before an event are skipped, not an event
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// Next returns the next event: its lines as sent, including the blank line that ends it
// (absent only for a last event cut short by the end of the stream). The slice is valid
// until the next call. At the end of the stream it returns io.EOF.
func (r *Reader) Next() ([]byte, error) {
	r.buf = r.buf[:0]
	lineStart := 0
	for {
		part, err := r.br.ReadSlice('\n')
		r.buf = append(r.buf, part...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			if err == io.EOF && len(r.buf) > 0 {
				return r.buf, nil
			}
			return nil, err
		}
		line := r.buf[lineStart:]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			if lineStart == 0 { // a blank line with no event before it
				r.buf = r.buf[:0]
				continue
			}
			return r.buf, nil
		}
		lineStart = len(r.buf)
	}
}

// field cuts event's first line and returns that line's value for the named field ("data:",
// "event:"; one space after the colon removed), whether the line has that field, and the
// rest of the event.
func field(event, name []byte) (value []byte, ok bool, rest []byte) {
	line := event
	if i := bytes.IndexByte(event, '\n'); i >= 0 {
		line, rest = event[:i], event[i+1:]
	}
	value, ok = bytes.CutPrefix(bytes.TrimSuffix(line, []byte{'\r'}), name)
	return bytes.TrimPrefix(value, []byte{' '}), ok, rest
}

var dataPrefix = []byte("data:")

// Data returns the payload of an event's data lines; several data lines are joined with
// "\n" as the SSE format says. With one data line (as every LLM provider sends) the result
// aliases event.
func Data(event []byte) []byte {
	var out []byte
	n := 0
	for len(event) > 0 {
		var v []byte
		var ok bool
		if v, ok, event = field(event, dataPrefix); !ok {
			continue
		}
		switch n++; n {
		case 1:
			out = v
		case 2:
			out = append(append(append([]byte(nil), out...), '\n'), v...)
		default:
			out = append(append(out, '\n'), v...)
		}
	}
	return out
}

var eventPrefix = []byte("event:")

// Name returns an event's name (its "event:" field), or "" when it has none.
func Name(event []byte) string {
	for len(event) > 0 {
		var v []byte
		var ok bool
		if v, ok, event = field(event, eventPrefix); ok {
			return string(v)
		}
	}
	return ""
}
