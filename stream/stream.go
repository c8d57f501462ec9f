package stream

import (
	"io"
	"net/http"
	"time"

	"github.com/loom-gateway/loom/internal/sse"
	"github.com/loom-gateway/loom/provider"
)

// RelayOptions configures Relay.
type RelayOptions struct {
	// StripUsage drops usage-only chunks (empty choices, a usage object): Loom always asks
	// the upstream for usage, and a client that did not ask must not see it.
	StripUsage bool
	// Capture is how many bytes of the stream to keep for the trace; 0 keeps none.
	Capture int
	// Now reads the clock. If nil, time.Now is used.
	Now func() time.Time
	// BeforeDone, if not nil, is called when the upstream's [DONE] arrives, after
	// everything before it was written and flushed and before [DONE] itself is written,
	// with the Result so far (End is the time [DONE] arrived). If it returns an error,
	// [DONE] is not written and the error is Result.BeforeDoneErr: the gateway's strict
	// mode holds the end of the stream back until its trace is durable.
	BeforeDone func(Result) error
}

// Result is what Relay learned of a stream.
type Result struct {
	Usage      *provider.Usage // the last usage the upstream reported, if any
	Model      string          // the model the upstream says served the stream
	Chunks     int             // chunks carrying choices: an estimate of tokens when Usage is nil
	FirstEvent time.Time       // when the first event arrived from the upstream
	End        time.Time       // when the upstream stream ended or was abandoned
	Done       bool            // the upstream sent "data: [DONE]"
	// FinishReasons are the choices' finish reasons, each once, in choice order (see
	// provider.FinishReasons); nil when no choice finished.
	FinishReasons []string
	// UpstreamError is set when the upstream sent an error event mid-stream.
	UpstreamError bool
	// Captured holds the first Capture bytes of the stream as the upstream sent it.
	Captured  []byte
	Truncated bool
	// ReadErr is the error that ended reading the upstream before [DONE] (nil at a clean
	// end).
	ReadErr error
	// WriteErr is the error that ended writing to the client (the client left).
	WriteErr error
	// BeforeDoneErr is what RelayOptions.BeforeDone returned; [DONE] was not written.
	BeforeDoneErr error
}

// Relay copies the SSE stream src to w event by event and flushes whenever it has written
// every event received so far, so every chunk reaches the client the moment it arrives
// (events that arrived together leave together). It reads usage, the served model and
// the finish reasons on the way without re-encoding anything. The caller has written the response header.
func Relay(w http.ResponseWriter, src io.Reader, opts RelayOptions) Result {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rc := http.NewResponseController(w)
	rd := sse.NewReader(src)
	var res Result
	var finish provider.FinishReasons
	unflushed := false // written to w since the last flush
	for {
		ev, err := rd.Next()
		if err != nil {
			// After [DONE] the answer is complete: a client that hangs up then, which
			// cancels the upstream read, has not cut anything short.
			if err != io.EOF && !res.Done {
				res.ReadErr = err
			}
			break
		}
		if res.Done {
			continue // nothing is relayed after [DONE]; read to the end so the connection is reused
		}
		if res.FirstEvent.IsZero() {
			res.FirstEvent = now()
		}
		skip := false
		switch data := sse.Data(ev); {
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
				finish.Add(c.Choices)
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
		if !skip {
			if res.Done && opts.BeforeDone != nil {
				// Everything before [DONE] reaches the client first; [DONE] waits.
				if err := rc.Flush(); err != nil {
					res.WriteErr = err
					break
				}
				unflushed = false
				res.End = now()
				res.FinishReasons = finish.List()
				if res.BeforeDoneErr = opts.BeforeDone(res); res.BeforeDoneErr != nil {
					continue
				}
			}
			if _, err := w.Write(ev); err != nil {
				res.WriteErr = err
				break
			}
			unflushed = true
		}
		// Flush unless the next event has already arrived: then it goes out in the same
		// write, a moment later, instead of costing a system call of its own. Nothing is
		// ever held back waiting for the upstream, not even behind a dropped event.
		if !unflushed || rd.Ready() {
			continue
		}
		if err := rc.Flush(); err != nil {
			res.WriteErr = err
			break
		}
		unflushed = false
	}
	if res.WriteErr == nil {
		rc.Flush() // whatever the loop wrote last, in case it ended on a read error
	}
	res.End = now()
	res.FinishReasons = finish.List()
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

// Pass copies a stream Loom cannot read (compressed in an encoding it cannot decode) to w
// as it comes, flushing after every read. Only the timings, the capture and the errors of
// the Result are set.
func Pass(w http.ResponseWriter, src io.Reader, opts RelayOptions) Result {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rc := http.NewResponseController(w)
	var res Result
	buf := make([]byte, 8<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if res.FirstEvent.IsZero() {
				res.FirstEvent = now()
			}
			b := buf[:n]
			room := max(opts.Capture-len(res.Captured), 0)
			res.Captured = append(res.Captured, b[:min(room, n)]...)
			res.Truncated = res.Truncated || (opts.Capture > 0 && room < n)
			if _, res.WriteErr = w.Write(b); res.WriteErr == nil {
				res.WriteErr = rc.Flush()
			}
			if res.WriteErr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				res.ReadErr = err
			}
			break
		}
	}
	res.End = now()
	return res
}
