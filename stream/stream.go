package stream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/loom-gateway/loom/provider"
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

var dataPrefix = []byte("data:")

// Data returns the payload of an event's data lines; several data lines are joined with
// "\n" as the SSE format says. With one data line (as every LLM provider sends) the result
// aliases event.
func Data(event []byte) []byte {
	var out []byte
	n := 0
	for len(event) > 0 {
		line := event
		if i := bytes.IndexByte(event, '\n'); i >= 0 {
			line, event = event[:i], event[i+1:]
		} else {
			event = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if !bytes.HasPrefix(line, dataPrefix) {
			continue
		}
		v := line[len(dataPrefix):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
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

// RelayOptions configures Relay.
type RelayOptions struct {
	// StripUsage drops usage-only chunks (empty choices, a usage object): Loom always asks
	// the upstream for usage, and a client that did not ask must not see it.
	StripUsage bool
	// Capture is how many bytes of the stream to keep for the trace; 0 keeps none.
	Capture int
	// Now reads the clock. If nil, time.Now is used.
	Now func() time.Time
}

// Result is what Relay learned of a stream.
type Result struct {
	Usage      *provider.Usage // the last usage the upstream reported, if any
	Model      string          // the model the upstream says served the stream
	Chunks     int             // chunks carrying choices: an estimate of tokens when Usage is nil
	FirstEvent time.Time       // when the first event arrived from the upstream
	End        time.Time       // when the upstream stream ended or was abandoned
	Done       bool            // the upstream sent "data: [DONE]"
	// UpstreamError is set when the upstream sent an error event mid-stream.
	UpstreamError bool
	// Captured holds the first Capture bytes of the stream as the upstream sent it.
	Captured  []byte
	Truncated bool
	// ReadErr is the error that ended reading the upstream (nil at a clean end).
	ReadErr error
	// WriteErr is the error that ended writing to the client (the client left).
	WriteErr error
}

// Relay copies the SSE stream src to w event by event and flushes whenever it has written
// every event received so far, so every chunk reaches the client the moment it arrives
// (events that arrived together leave together). It reads usage and the served model on
// the way without re-encoding anything. The caller has written the response header.
func Relay(w http.ResponseWriter, src io.Reader, opts RelayOptions) Result {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rc := http.NewResponseController(w)
	rd := NewReader(src)
	var res Result
	for {
		ev, err := rd.Next()
		if err != nil {
			if err != io.EOF {
				res.ReadErr = err
			}
			break
		}
		if res.FirstEvent.IsZero() {
			res.FirstEvent = now()
		}
		skip := false
		switch data := Data(ev); {
		case string(data) == "[DONE]":
			res.Done = true
		case len(data) > 0 && data[0] == '{':
			c := provider.ReadCompletion(data)
			if c.Usage != nil {
				res.Usage = c.Usage
				skip = opts.StripUsage && c.NoChoices
			}
			if res.Model == "" && len(c.Model) > 0 {
				res.Model = string(c.Model)
			}
			if c.HasContent {
				res.Chunks++
			}
			if c.HasError {
				res.UpstreamError = true
			}
		}
		if room := opts.Capture - len(res.Captured); room > 0 {
			res.Captured = append(res.Captured, ev[:min(room, len(ev))]...)
			res.Truncated = room < len(ev)
		} else if opts.Capture > 0 {
			res.Truncated = true
		}
		if skip {
			continue
		}
		if _, err := w.Write(ev); err != nil {
			res.WriteErr = err
			break
		}
		// Flush unless the next event has already arrived: then it goes out in the same
		// write, a moment later, instead of costing a system call of its own. Nothing is
		// ever held back waiting for the upstream.
		if rd.Ready() {
			continue
		}
		if err := rc.Flush(); err != nil {
			res.WriteErr = err
			break
		}
	}
	if res.WriteErr == nil {
		rc.Flush() // whatever the loop wrote last, in case it ended on a read error
	}
	res.End = now()
	return res
}

// WriteError sends an error event mid-stream: `data: {"error":…}` and a blank line. The
// caller then ends the response.
func WriteError(w http.ResponseWriter, errorJSON []byte) error {
	b := make([]byte, 0, len(errorJSON)+8)
	b = append(append(append(b, "data: "...), errorJSON...), "\n\n"...)
	if _, err := w.Write(b); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}
