package tracing

import "errors"

// Permanent marks err as a permanent refusal: the store will refuse the same traces again
// however often they are offered (a value it cannot hold, a constraint they break), so
// retrying them is pointless. A Sink returns Permanent(err) from WriteBatch for such a
// failure, and any other error for a transient one (the store is down, slow, busy or full),
// which the pipeline retries with backoff.
//
// The pipeline splits a batch that fails permanently to find the traces at fault, writes
// the rest, and sets each refused trace aside in the dead-letter file of the spool
// directory (see ReplayDeadLetter). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
