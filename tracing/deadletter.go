package tracing

// The dead-letter file: traces a sink refused permanently (see Permanent), set aside in the
// spool directory instead of being retried forever or dropped.
//
// SpoolDir/deadletter.dlq is the 8-byte magic deadLetterMagic followed by records framed as
// in a spool segment (length, CRC-32C, payload). A payload is
//
//	byte             deadLetterV1
//	uvarint, bytes   the sink's error, as text
//	rest             the trace, encoded as in a spool record (appendTrace; sequence number 0)
//
// Bodies stay sealed, as in the spool. Each record is appended with one write and fsynced.
// ReplayDeadLetter offers the records to sinks again, once the cause is fixed.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

const (
	deadLetterName  = "deadletter.dlq"
	deadLetterMagic = "LOOMDLQ1"
	deadLetterV1    = 1
	// replayingSuffix names the dead-letter file a ReplayDeadLetter is working through: the
	// pipeline meanwhile starts a new deadletter.dlq.
	replayingSuffix = ".replaying"
)

// quarantine sets t aside for sh's sink after that sink refused it with cause: it appends t
// to the dead-letter file, counts it (Stats.Quarantined) and logs it once, with its id and
// the reason. Without SpoolDir there is no file to keep it in: it is counted as lost
// (Stats.LostRefused) instead. A non-nil error means t could not be set aside.
func (p *Pipeline) quarantine(sh *shipper, t *Trace, cause error) error {
	if p.dir == "" {
		p.log.Error("tracing: sink refused a trace; without a spool directory it is lost",
			"sink", sh.idx, "trace_id", t.ID, "err", cause)
		p.lose(lossRefused, 1, cause)
		return nil
	}
	p.deadMu.Lock()
	err := appendDeadLetter(p.dir, t, cause.Error(), p.crc)
	p.deadMu.Unlock()
	if err != nil {
		p.log.Error("tracing: cannot write the dead-letter file; retrying the refused trace",
			"sink", sh.idx, "trace_id", t.ID, "err", err)
		return fmt.Errorf("tracing: dead letter: %w", err)
	}
	p.quarantined.Add(1)
	p.log.Error("tracing: sink refused a trace; set aside in the dead-letter file",
		"sink", sh.idx, "trace_id", t.ID, "file", filepath.Join(p.dir, deadLetterName), "err", cause)
	return nil
}

// appendDeadLetter appends t, refused for reason, to dir's dead-letter file, durably.
func appendDeadLetter(dir string, t *Trace, reason string, tab *crc32.Table) error {
	path := filepath.Join(dir, deadLetterName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var b []byte
	if fi.Size() == 0 {
		b = append(b, deadLetterMagic...)
	}
	start := len(b)
	b = append(b, make([]byte, recHeaderLen)...)
	b = append(b, deadLetterV1)
	b = binary.AppendUvarint(b, uint64(len(reason)))
	b = append(b, reason...)
	b = appendTrace(b, 0, t)
	putRecordHeader(b[start:], tab)
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if fi.Size() == 0 {
		return syncDir(dir)
	}
	return nil
}

// DeadLetter is one trace set aside in a dead-letter file.
type DeadLetter struct {
	Trace  *Trace
	Reason string // the refusing sink's error
}

// ReadDeadLetter returns the traces set aside in dir's dead-letter file, oldest first
// (none if there is no file). It also reads a file an interrupted ReplayDeadLetter left.
func ReadDeadLetter(dir string) ([]DeadLetter, error) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var out []DeadLetter
	for _, name := range []string{deadLetterName + replayingSuffix, deadLetterName} {
		recs, err := readDeadLetterFile(filepath.Join(dir, name), tab)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// readDeadLetterFile reads one dead-letter file; a missing file holds nothing. A damaged
// record is an error: nothing in the file is skipped silently.
func readDeadLetterFile(path string, tab *crc32.Table) ([]DeadLetter, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: dead letter: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tracing: dead letter: %w", err)
	}
	var h [len(deadLetterMagic)]byte
	if _, err := io.ReadFull(f, h[:]); err != nil || string(h[:]) != deadLetterMagic {
		return nil, fmt.Errorf("tracing: dead letter: %s is not a dead-letter file", path)
	}
	r := &spoolReader{f: f, br: bufio.NewReaderSize(f, 64<<10), off: int64(len(deadLetterMagic))}
	var out []DeadLetter
	for {
		p, err := r.next(fi.Size(), tab)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tracing: dead letter: %s: %w", path, err)
		}
		d := decoder{b: p}
		if d.byte() != deadLetterV1 {
			return nil, fmt.Errorf("tracing: dead letter: %s: unknown record version", path)
		}
		reason := d.string()
		if d.err {
			return nil, fmt.Errorf("tracing: dead letter: %s: malformed record", path)
		}
		t, err := decodeTrace(d.b)
		if err != nil {
			return nil, fmt.Errorf("tracing: dead letter: %s: %w", path, err)
		}
		out = append(out, DeadLetter{Trace: t, Reason: reason})
	}
}

// ReplayDeadLetter offers the traces set aside in dir's dead-letter file (see Permanent) to
// every one of sinks, once the cause of their refusal is fixed, and removes from the file
// each trace that every sink took. A trace a sink still refuses permanently stays in the
// file, with its new reason. It returns how many traces were written and how many are still
// set aside. A transient failure stops the replay with its error; running it again is safe
// (sinks store a trace offered twice once).
//
// It may run while a Pipeline uses dir: the file is first renamed to
// deadletter.dlq.replaying, so the pipeline sets new refusals aside in a fresh file, and a
// replay interrupted by a crash resumes from the renamed file. It must not run twice at
// once on one directory. It does not shut the sinks down.
func ReplayDeadLetter(ctx context.Context, dir string, sinks ...Sink) (written, kept int, err error) {
	if len(sinks) == 0 {
		return 0, 0, errors.New("tracing: replay dead letter: no sinks")
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	path := filepath.Join(dir, deadLetterName)
	work := path + replayingSuffix
	if _, err := os.Stat(work); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(path, work); errors.Is(err, os.ErrNotExist) {
			return 0, 0, nil
		} else if err != nil {
			return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
		}
	}
	recs, err := readDeadLetterFile(work, tab)
	if err != nil {
		return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
	}
	batch := make([]*Trace, len(recs))
	for i, r := range recs {
		batch[i] = r.Trace
	}
	refused := map[*Trace]error{}
	for _, s := range sinks {
		if err := writeOrRefuse(ctx, s, batch, refused); err != nil {
			return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
		}
	}
	for _, t := range batch {
		if cause, ok := refused[t]; ok {
			if err := appendDeadLetter(dir, t, cause.Error(), tab); err != nil {
				return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
			}
		}
	}
	if err := os.Remove(work); err != nil {
		return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return 0, 0, fmt.Errorf("tracing: replay dead letter: %w", err)
	}
	return len(batch) - len(refused), len(refused), nil
}

// writeOrRefuse writes batch to s in batches of up to 512, splitting a batch that fails
// permanently down to the traces at fault, which it records in refused. It returns the
// first transient error.
func writeOrRefuse(ctx context.Context, s Sink, batch []*Trace, refused map[*Trace]error) error {
	for len(batch) > 512 {
		if err := writeOrRefuse(ctx, s, batch[:512], refused); err != nil {
			return err
		}
		batch = batch[512:]
	}
	if len(batch) == 0 {
		return nil
	}
	err := s.WriteBatch(ctx, batch)
	switch {
	case err == nil:
		return nil
	case !IsPermanent(err) || ctx.Err() != nil:
		return err
	case len(batch) == 1:
		refused[batch[0]] = err
		return nil
	}
	mid := len(batch) / 2
	if err := writeOrRefuse(ctx, s, batch[:mid], refused); err != nil {
		return err
	}
	return writeOrRefuse(ctx, s, batch[mid:], refused)
}
