package tracing

// The write-ahead spool on disk: segment files, record framing, the trace encoding, replay
// and the acknowledgement cursor. The pipeline (pipeline.go) owns the goroutines; this file
// owns the bytes.
//
// Layout of SpoolDir:
//
//	00000000000000000001.seg   segments, named by the sequence number of their first record
//	00000000000000004711.seg   (the newest is the one being appended to)
//	acked                      cursor: each sink's acknowledged sequence number (cursor.go)
//	deadletter.dlq             traces a sink refused permanently (deadletter.go)
//	<segment>.seg.corrupt      damaged bytes replay skipped (spoolrepair.go)
//
// A segment is the 8-byte magic segMagic followed by records. A record is
//
//	uint32 little-endian  length of the payload
//	uint32 little-endian  CRC-32C (Castagnoli) of the payload
//	payload               encoded trace, see appendTrace
//
// Sequence numbers grow by one per record and are never reused, also across restarts, so a
// cursor or a segment name stays meaningful after a crash.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	segMagic      = "LOOMSPL1" // "LOOMSPL" + layout version
	segHeaderLen  = int64(len(segMagic))
	segExt        = ".seg"
	recHeaderLen  = 8
	traceFormatV1 = 1 // first byte of every payload
	traceFormatV2 = 2 // V1 and the usage in full; V1 records still decode

	// recMinPayload is the smallest payload that can hold a version byte and a sequence
	// number; it also stops a zero-filled tail (length 0, CRC 0) from passing as a record.
	recMinPayload = 1 + 8
	// maxRecordBytes bounds one encoded trace; a larger trace is lost as an encode error.
	// It also bounds what a torn length field can make replay try to read.
	maxRecordBytes = 64 << 20

	defaultSegmentBytes = 16 << 20
)

// Flag bits of the encoded trace.
const (
	flagStream = 1 << iota
	flagClientAborted
	flagResponseTruncated
	flagCost
	flagFieldsCut
	flagRetries // an upstream_retries varint follows the bodies
	flagW3C     // the W3C trace context fields follow (after upstream_retries, if any)
	// flagFinish: the finish reasons follow (a count, then each; last). The flag byte is
	// now full: a further optional field needs a new record format version.
	flagFinish
)

// appendTrace appends the version-2 encoding of t, tagged with its spool sequence number, to
// b. The plaintext bodies are not part of the encoding, so they cannot reach the disk even
// if a caller forgot to clear them. Version 2 is version 1 with the usage in full
// appended; a spool written by an older build still replays.
func appendTrace(b []byte, seq uint64, t *Trace) []byte {
	b = append(b, traceFormatV2)
	b = binary.LittleEndian.AppendUint64(b, seq)
	var flags byte
	if t.Stream {
		flags |= flagStream
	}
	if t.ClientAborted {
		flags |= flagClientAborted
	}
	if t.ResponseTruncated {
		flags |= flagResponseTruncated
	}
	if t.CostMicroUSD != nil {
		flags |= flagCost
	}
	if t.FieldsCut {
		flags |= flagFieldsCut
	}
	if t.UpstreamRetries != 0 {
		flags |= flagRetries
	}
	w3c := [...]string{t.W3CTraceID, t.W3CSpanID, t.W3CParentSpanID, t.W3CTraceState}
	if w3c != [4]string{} {
		flags |= flagW3C
	}
	if len(t.FinishReasons) > 0 {
		flags |= flagFinish
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, t.CreatedAt.Unix())
	b = binary.AppendUvarint(b, uint64(t.CreatedAt.Nanosecond()))
	for _, s := range [...]string{t.ID, t.TenantID, t.APIKeyID, t.RequestID, t.Model,
		t.ServedModel, t.Provider, t.ErrorType, string(t.UsageSource), t.PriceVersion} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, v := range [...]int64{int64(t.Status), t.PromptTokens, t.CompletionTokens,
		t.CachedTokens, t.ReasoningTokens, t.LatencyUS, t.TTFBUS, t.OverheadUS,
		int64(t.KeyVersion)} {
		b = binary.AppendVarint(b, v)
	}
	if t.CostMicroUSD != nil {
		b = binary.AppendVarint(b, *t.CostMicroUSD)
	}
	b = appendBytes(b, t.SealedRequest)
	b = appendBytes(b, t.SealedResponse)
	if t.UpstreamRetries != 0 {
		b = binary.AppendVarint(b, int64(t.UpstreamRetries))
	}
	// Version 2: the usage in full.
	for _, v := range [...]int64{t.CacheWrite5mTokens, t.CacheWrite1hTokens, t.AudioPromptTokens,
		t.AudioCompletionTokens, t.AcceptedPredictionTokens, t.RejectedPredictionTokens} {
		b = binary.AppendVarint(b, v)
	}
	for _, s := range [...]string{t.UsageMethod, t.ServiceTier} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if flags&flagW3C != 0 {
		for _, s := range w3c {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	if flags&flagFinish != 0 {
		b = binary.AppendUvarint(b, uint64(len(t.FinishReasons)))
		for _, s := range t.FinishReasons {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// appendBytes writes nil as 0 and anything else as length+1, so nil and empty survive.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

// payloadSeq returns the sequence number of a payload that passed readRecord's checks.
func payloadSeq(p []byte) uint64 { return binary.LittleEndian.Uint64(p[1:9]) }

// decodeTrace decodes a payload written by appendTrace. The result shares no memory with p.
func decodeTrace(p []byte) (*Trace, error) {
	if len(p) < recMinPayload || (p[0] != traceFormatV1 && p[0] != traceFormatV2) {
		return nil, errors.New("tracing: spool: unknown record version")
	}
	d := decoder{b: p[9:]}
	flags := d.byte()
	t := &Trace{
		Stream:            flags&flagStream != 0,
		ClientAborted:     flags&flagClientAborted != 0,
		ResponseTruncated: flags&flagResponseTruncated != 0,
		FieldsCut:         flags&flagFieldsCut != 0,
	}
	sec := d.varint()
	nsec := d.uvarint()
	t.CreatedAt = time.Unix(sec, int64(nsec)).UTC()
	t.ID = d.string()
	t.TenantID = d.string()
	t.APIKeyID = d.string()
	t.RequestID = d.string()
	t.Model = d.string()
	t.ServedModel = d.string()
	t.Provider = d.string()
	t.ErrorType = d.string()
	t.UsageSource = UsageSource(d.string())
	t.PriceVersion = d.string()
	t.Status = int(d.varint())
	t.PromptTokens = d.varint()
	t.CompletionTokens = d.varint()
	t.CachedTokens = d.varint()
	t.ReasoningTokens = d.varint()
	t.LatencyUS = d.varint()
	t.TTFBUS = d.varint()
	t.OverheadUS = d.varint()
	t.KeyVersion = int(d.varint())
	if flags&flagCost != 0 {
		c := d.varint()
		t.CostMicroUSD = &c
	}
	t.SealedRequest = d.bytes()
	t.SealedResponse = d.bytes()
	if flags&flagRetries != 0 {
		t.UpstreamRetries = int(d.varint())
	}
	if p[0] == traceFormatV2 {
		t.CacheWrite5mTokens = d.varint()
		t.CacheWrite1hTokens = d.varint()
		t.AudioPromptTokens = d.varint()
		t.AudioCompletionTokens = d.varint()
		t.AcceptedPredictionTokens = d.varint()
		t.RejectedPredictionTokens = d.varint()
		t.UsageMethod = d.string()
		t.ServiceTier = d.string()
	}
	if flags&flagW3C != 0 { // after the version-2 usage
		t.W3CTraceID = d.string()
		t.W3CSpanID = d.string()
		t.W3CParentSpanID = d.string()
		t.W3CTraceState = d.string()
	}
	if flags&flagFinish != 0 { // after the W3C fields, if any
		n := d.uvarint()
		if n == 0 || n > uint64(len(d.b)) { // each takes a byte at least
			d.err = true
		}
		for ; n > 0 && !d.err; n-- {
			t.FinishReasons = append(t.FinishReasons, d.string())
		}
	}
	if d.err {
		return nil, errors.New("tracing: spool: malformed record")
	}
	return t, nil
}

// putRecordHeader fills in the 8-byte header in front of a payload appended to rec.
func putRecordHeader(rec []byte, tab *crc32.Table) {
	payload := rec[recHeaderLen:]
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32.Checksum(payload, tab))
}

// segment is one spool file as the pipeline sees it. Guarded by Pipeline.mu once the
// pipeline runs; readers work on copies.
type segment struct {
	first uint64 // from the file name; every record in it is at least this
	path  string
	size  int64  // bytes of the header and whole, verified records
	last  uint64 // sequence number of the newest record; 0 when empty
	count int64  // records
}

func segPath(dir string, first uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", first, segExt))
}

// corruptError is a record that fails its checks: a torn write or damage on disk.
type corruptError struct {
	off    int64
	reason string
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("tracing: spool: corrupt record at offset %d: %s", e.off, e.reason)
}

// spoolReader reads a segment's records in order. Each shipper has one, so a shipper that
// falls behind the in-memory window reads on from where it stopped.
type spoolReader struct {
	first uint64 // segment open; meaningful only when f != nil
	f     *os.File
	br    *bufio.Reader
	off   int64  // offset of the next record
	last  uint64 // sequence number of the last record read; 0 when none yet
	buf   []byte
}

func (r *spoolReader) open(s *segment) error {
	r.close()
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	if _, err := f.Seek(segHeaderLen, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	if r.br == nil {
		r.br = bufio.NewReaderSize(f, 64<<10)
	} else {
		r.br.Reset(f)
	}
	r.f, r.first, r.off, r.last = f, s.first, segHeaderLen, 0
	return nil
}

// openAt opens s to read on at the record at off, the one after sequence number last.
func (r *spoolReader) openAt(s *segment, off int64, last uint64) error {
	if err := r.open(s); err != nil {
		return err
	}
	if _, err := r.f.Seek(off, io.SeekStart); err != nil {
		r.close()
		return err
	}
	r.br.Reset(r.f)
	r.off, r.last = off, last
	return nil
}

func (r *spoolReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// next reads the record at r.off, which must end at or before limit, and returns its
// payload (valid until the next call). It returns a *corruptError for a record that fails
// its checks, io.EOF at limit, and other errors as they come.
func (r *spoolReader) next(limit int64, tab *crc32.Table) ([]byte, error) {
	if r.off >= limit {
		return nil, io.EOF
	}
	var h [recHeaderLen]byte
	if limit-r.off < recHeaderLen {
		return nil, &corruptError{r.off, "short record header"}
	}
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return nil, r.readErr(err, "short record header")
	}
	n := int64(binary.LittleEndian.Uint32(h[0:4]))
	if n < recMinPayload || n > maxRecordBytes || r.off+recHeaderLen+n > limit {
		return nil, &corruptError{r.off, "bad record length " + strconv.FormatInt(n, 10)}
	}
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return nil, r.readErr(err, "short record")
	}
	if crc32.Checksum(p, tab) != binary.LittleEndian.Uint32(h[4:8]) {
		return nil, &corruptError{r.off, "checksum mismatch"}
	}
	r.off += recHeaderLen + n
	return p, nil
}

func (r *spoolReader) readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// The file is shorter than the bytes the caller knows to be there.
		return &corruptError{r.off, what}
	}
	return err
}

// read returns up to n decoded traces with sequence numbers in [from, stop) from the
// segments segs, and through: the highest sequence number such that every record of
// [from, through] present on disk is in the result. The caller may then move on to
// through+1, which also steps over gaps that replay cut out.
func (r *spoolReader) read(segs []segment, from, stop uint64, n int, tab *crc32.Table, dst []*Trace) (_ []*Trace, through uint64, _ *segment, _ error) {
	i, _ := slices.BinarySearchFunc(segs, from, func(s segment, seq uint64) int {
		if s.first > seq {
			return 1
		}
		return -1
	})
	i = max(i-1, 0)
	through = from - 1
	for ; i < len(segs); i++ {
		s := &segs[i]
		if s.first >= stop {
			break
		}
		if s.count == 0 || s.last < from {
			continue
		}
		if r.f == nil || r.first != s.first || r.last >= from {
			if err := r.open(s); err != nil {
				return dst, through, s, err
			}
		}
		for {
			p, err := r.next(s.size, tab)
			if err == io.EOF {
				break
			}
			if err != nil {
				r.close()
				return dst, through, s, err
			}
			seq := payloadSeq(p)
			r.last = seq
			if seq < from {
				continue
			}
			if seq >= stop {
				return dst, stop - 1, nil, nil
			}
			t, err := decodeTrace(p)
			if err != nil {
				r.close()
				return dst, through, s, &corruptError{r.off, err.Error()}
			}
			dst = append(dst, t)
			through = seq
			if len(dst) == n {
				return dst, through, nil, nil
			}
		}
	}
	return dst, stop - 1, nil, nil
}

// scanSegment verifies every record of the segment file at path. Damage anywhere (a crash
// mid-append, a flipped bit) is repaired by repairSegment, which skips only the damaged
// records and reports how many were lost. pending[i] counts the records above acks[i].
// nextFirst is the name of the next segment (0 for the newest), which bounds this one's
// records. A file that is not a segment at all is an error, except for a header torn while
// the file was being created, which makes an empty segment (size 0).
func scanSegment(path string, first uint64, acks []uint64, nextFirst uint64, tab *crc32.Table) (seg *segment, pending []int64, rep repair, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, repair{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, repair{}, err
	}
	seg = &segment{first: first, path: path}
	var h [segHeaderLen]byte
	n, err := io.ReadFull(f, h[:])
	switch {
	case err == nil && string(h[:]) == segMagic:
	case (err == io.ErrUnexpectedEOF || err == io.EOF) && strings.HasPrefix(segMagic, string(h[:n])),
		err == nil && h == [segHeaderLen]byte{}:
		// Torn while being created: it never held a record, so nothing is lost.
		return seg, make([]int64, len(acks)), repair{}, nil
	case err == nil && strings.HasPrefix(string(h[:]), segMagic[:len(segMagic)-1]):
		return nil, nil, repair{}, fmt.Errorf("tracing: spool: %s: segment layout %q is newer than this build", path, h[len(h)-1])
	case err == nil:
		return nil, nil, repair{}, fmt.Errorf("tracing: spool: %s: not a spool segment", path)
	default:
		return nil, nil, repair{}, err
	}
	r := &spoolReader{f: f, br: bufio.NewReaderSize(f, 256<<10), off: segHeaderLen, first: first}
	prev := first - 1
	pending = make([]int64, len(acks))
	for {
		p, err := r.next(fi.Size(), tab)
		if err == io.EOF {
			break
		}
		var ce *corruptError
		if errors.As(err, &ce) {
			f.Close()
			return repairSegment(path, first, acks, nextFirst, tab)
		}
		if err != nil {
			return nil, nil, repair{}, err
		}
		if p[0] > traceFormatV2 {
			return nil, nil, repair{}, fmt.Errorf("tracing: spool: %s: record format %d is newer than this build", path, p[0])
		}
		seq := payloadSeq(p)
		if seq <= prev {
			f.Close() // out of order: damage
			return repairSegment(path, first, acks, nextFirst, tab)
		}
		prev = seq
		seg.last = seq
		seg.count++
		for i, a := range acks {
			if seq > a {
				pending[i]++
			}
		}
	}
	seg.size = r.off
	return seg, pending, repair{}, nil
}

// listSegments returns the first sequence numbers of the segment files in dir, oldest first.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segExt)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil || first == 0 {
			continue
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// createSegment creates the segment file for records from first on through create,
// reserves room bytes for it (where the file system allows), and makes it durable (the file
// and its directory entry are synced); it returns it open for appending. A segment that
// cannot be reserved or written whole is removed again: on a full disk the error says so
// (isNoSpace).
func createSegment(create func(string) (spoolFile, error), dir string, first uint64, room int64) (*segment, spoolFile, error) {
	path := segPath(dir, first)
	f, err := create(path)
	if err != nil {
		return nil, nil, err
	}
	if err = f.Reserve(room); errors.Is(err, errNoReserve) {
		err = nil
	}
	if err == nil {
		// A segment without its whole header must not be left behind: the write's error
		// counts like the others.
		_, err = f.Write([]byte(segMagic))
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, nil, err
	}
	return &segment{first: first, path: path, size: segHeaderLen}, f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
