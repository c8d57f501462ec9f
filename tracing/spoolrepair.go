package tracing

// Spool repair at replay: a segment with a damaged record in the middle (a flipped bit, a
// bad sector, a torn write followed by later appends) loses only that record. The records
// of a segment carry consecutive sequence numbers, which makes them their own marker: after
// damage, replay resynchronises on the next offset holding a record that passes every check
// (a plausible length, the format byte, the next sequence numbers, and its CRC-32C), counts
// exactly the sequence numbers skipped as lost, keeps the damaged bytes aside in
// <segment>.corrupt for inspection, and rewrites the segment without them. The segment
// layout is unchanged, so segments written by older builds are repaired the same way.

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// corruptExt is appended to a segment's name for the file keeping its damaged bytes.
const corruptExt = ".corrupt"

// resyncWindow bounds how far ahead of the last good record a resynchronised record's
// sequence number may be; a larger one is taken for garbage that happens to parse.
const resyncWindow = 1 << 24

// repair is what repairSegment did to a segment.
type repair struct {
	lost    int64 // records lost (for a damaged tail of the newest segment, at least one)
	damaged int64 // bytes set aside in the .corrupt file
}

// recordAt checks for a whole, valid record at data[off:] whose sequence number is in
// (prev, prev+resyncWindow], and returns its length and sequence number.
func recordAt(data []byte, off int, prev uint64, tab *crc32.Table) (n int, seq uint64, ok bool) {
	if len(data)-off < recHeaderLen+recMinPayload {
		return 0, 0, false
	}
	size := int(binary.LittleEndian.Uint32(data[off:]))
	if size < recMinPayload || size > maxRecordBytes || size > len(data)-off-recHeaderLen {
		return 0, 0, false
	}
	p := data[off+recHeaderLen : off+recHeaderLen+size]
	seq = payloadSeq(p)
	if (p[0] != traceFormatV1 && p[0] != traceFormatV2) || seq <= prev || seq-prev > resyncWindow {
		return 0, 0, false
	}
	if crc32.Checksum(p, tab) != binary.LittleEndian.Uint32(data[off+4:]) {
		return 0, 0, false
	}
	return recHeaderLen + size, seq, true
}

// repairSegment rewrites the segment at path with only its valid records, appends the
// bytes it skips to path+".corrupt", and counts the records lost: the sequence numbers
// skipped before each resynchronisation, and for damage at the end, those up to nextFirst
// (the next segment's first sequence number), or one when this is the newest segment
// (nextFirst 0) and how many a torn last append held is unknown.
func repairSegment(path string, first uint64, acks []uint64, nextFirst uint64, tab *crc32.Table) (*segment, []int64, repair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, repair{}, err
	}
	seg := &segment{first: first, path: path}
	var rep repair
	pending := make([]int64, len(acks))
	out := append(make([]byte, 0, len(data)), segMagic...)
	var damaged []byte
	prev := first - 1
	for off := int(segHeaderLen); off < len(data); {
		if n, seq, ok := recordAt(data, off, prev, tab); ok {
			out = append(out, data[off:off+n]...)
			prev, seg.last = seq, seq
			seg.count++
			for i, a := range acks {
				if seq > a {
					pending[i]++
				}
			}
			off += n
			continue
		}
		next := off + 1
		for ; next < len(data); next++ {
			if _, _, ok := recordAt(data, next, prev, tab); ok {
				break
			}
		}
		damaged = append(damaged, data[off:next]...)
		if next < len(data) {
			_, seq, _ := recordAt(data, next, prev, tab)
			rep.lost += int64(seq - prev - 1)
		} else if nextFirst > prev+1 {
			rep.lost += int64(nextFirst - prev - 1)
		} else if nextFirst == 0 {
			rep.lost++
		}
		off = next
	}
	rep.damaged = int64(len(damaged))
	seg.size = int64(len(out))
	if err := appendFileSync(path+corruptExt, damaged); err != nil {
		return nil, nil, repair{}, fmt.Errorf("keeping damaged bytes: %w", err)
	}
	if err := replaceFile(path, out); err != nil {
		return nil, nil, repair{}, fmt.Errorf("rewriting: %w", err)
	}
	return seg, pending, rep, nil
}

// skipDamaged finds where a shipper that found damage in seg at record from (after replay
// had verified the segment) can go on: the first valid record in seg from sequence number
// from on (from itself when the damage lies before it), its sequence number and offset. If none is left, ok is false and next is the one after the segment's last.
func skipDamaged(seg *segment, from uint64, tab *crc32.Table) (next uint64, off int64, ok bool) {
	data, err := os.ReadFile(seg.path)
	if err != nil {
		return seg.last + 1, 0, false
	}
	data = data[:min(int64(len(data)), seg.size)]
	for o := int(segHeaderLen); o < len(data); o++ {
		if _, seq, ok := recordAt(data, o, from-1, tab); ok {
			return seq, int64(o), true
		}
	}
	return seg.last + 1, 0, false
}

// appendFileSync appends b to the file at path (created 0600), durably.
func appendFileSync(path string, b []byte) error {
	return writeFileSync(path, os.O_APPEND, b)
}

// writeFileSync writes b to the file at path (created 0600, opened with flag added to
// O_WRONLY|O_CREATE) and syncs it.
func writeFileSync(path string, flag int, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replaceFile replaces the file at path with b atomically and durably (a temporary file,
// fsync, rename, directory fsync).
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	err := writeFileSync(tmp, os.O_TRUNC, b)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
