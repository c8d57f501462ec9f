// Package sse reads text/event-stream bodies event by event, for the stream relay and for
// provider adapters that translate an upstream's events.
//
// Lines end with "\r\n", "\n" or a bare "\r", as the SSE format allows.
package sse

import (
	"bytes"
	"errors"
	"io"
)

// MaxEvent bounds one event (with the blank lines before it): an upstream that never ends
// a line cannot make a Reader hold more.
const MaxEvent = 8 << 20

// ErrEventTooLarge is returned by Next for an event longer than MaxEvent.
var ErrEventTooLarge = errors.New("sse: event too large")

// Reader splits a text/event-stream body into events.
type Reader struct {
	src   io.Reader
	buf   []byte // buf[start:] is read from src and not yet returned
	start int
	err   error // src's error, returned once buf is used up
	// scanned bytes of buf[start:] are whole lines of the next event, which has a line
	// that is not blank when content is set: each byte is scanned once, however slowly
	// the event arrives.
	scanned int
	content bool
	partial int // bytes after scanned known to hold no line ending
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r, buf: make([]byte, 0, 8<<10)}
}

// Ready reports whether a whole next event is already buffered, so Next will return it
// without waiting on the underlying reader.
func (r *Reader) Ready() bool {
	return r.eventEnd() > 0
}

// Next returns the next event: its bytes as sent, from the blank lines before it (if any)
// to the blank line that ends it (absent only for a last event cut short by the end of the
// stream). The concatenated events are the stream, except blank lines at its very end.
// The slice is valid until the next call. At the end of the stream it returns io.EOF.
func (r *Reader) Next() ([]byte, error) {
	for {
		b := r.buf[r.start:]
		if n := r.eventEnd(); n > 0 {
			r.start += n
			r.scanned, r.content, r.partial = 0, false, 0
			return b[:n], nil
		}
		if r.err != nil {
			// What is left is an event the stream cut short, or blank lines.
			r.start = len(r.buf)
			cut := r.content || len(bytes.TrimSuffix(b[r.scanned:], []byte{'\r'})) > 0
			r.scanned, r.content, r.partial = 0, false, 0
			if r.err == io.EOF && cut {
				return b, nil
			}
			return nil, r.err
		}
		if len(b) >= MaxEvent {
			return nil, ErrEventTooLarge
		}
		r.fill()
	}
}

// fill reads once from src, making room first.
func (r *Reader) fill() {
	switch unread := r.buf[r.start:]; {
	case cap(r.buf) > 64<<10 && len(unread) < 4<<10:
		// After a large event, back to a small buffer for the rest of the stream.
		r.buf, r.start = append(make([]byte, 0, 8<<10), unread...), 0
	case r.start > 0:
		r.buf, r.start = r.buf[:copy(r.buf, unread)], 0
	}
	if len(r.buf) == cap(r.buf) {
		r.buf = append(r.buf, make([]byte, cap(r.buf))...)[:len(r.buf)]
	}
	n, err := r.src.Read(r.buf[len(r.buf):cap(r.buf)])
	r.buf = r.buf[:len(r.buf)+n]
	if err != nil {
		r.err = err
	}
}

// eventEnd returns the length of the first whole event in buf[start:] (blank lines before
// it, its lines, the blank line after it), or 0 when it holds none yet.
func (r *Reader) eventEnd() int {
	b := r.buf[r.start:]
	for i := r.scanned; i < len(b); {
		n, ok := lineEnd(b[i:], r.partial)
		if !ok {
			r.partial = len(b) - i
			if b[len(b)-1] == '\r' {
				r.partial-- // looked at again when the next byte is in
			}
			// A bare "\r" at the end of b may be the first half of "\r\n"; for a blank
			// line that ends an event it does not matter, so the event is not held back
			// until the next byte arrives (a following "\n" is a blank line before the
			// next event).
			if r.content && len(b)-i == 1 && b[i] == '\r' {
				return len(b)
			}
			return 0
		}
		if n == 1 || (n == 2 && b[i] == '\r') { // a blank line
			if r.content {
				return i + n
			}
		} else {
			r.content = true
		}
		i += n
		r.scanned, r.partial = i, 0
	}
	return 0
}

// lineEnd returns the length of the line at the start of b with its line ending, and
// false when the line may not have ended yet. b[:from] is known to hold no line ending.
func lineEnd(b []byte, from int) (int, bool) {
	j := bytes.IndexByte(b[from:], '\n')
	if j < 0 {
		j = len(b)
	} else {
		j += from
	}
	if k := bytes.IndexByte(b[from:j], '\r'); k >= 0 {
		k += from
		if k+1 == len(b) {
			return 0, false // "\r" or "\r\n": the next byte decides
		}
		if b[k+1] == '\n' {
			return k + 2, true
		}
		return k + 1, true
	}
	if j == len(b) {
		return 0, false
	}
	return j + 1, true
}

// field cuts event's first line and returns that line's value for the named field ("data:",
// "event:"; one space after the colon removed), whether the line has that field, and the
// rest of the event.
func field(event, name []byte) (value []byte, ok bool, rest []byte) {
	line := event
	if n, ok := lineEnd(event, 0); ok {
		line, rest = event[:n], event[n:]
	}
	line = bytes.TrimRight(line, "\r\n")
	if value, ok = bytes.CutPrefix(line, name); !ok {
		// A line without a colon names a field with an empty value.
		return nil, len(line) == len(name)-1 && bytes.HasPrefix(name, line), rest
	}
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
