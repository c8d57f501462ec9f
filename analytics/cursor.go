package analytics

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Cursor is a position in the newest-first order of traces: the (created_at, id) of the
// last trace a page returned. The next page holds the traces strictly before it in that
// order, so traces arriving meanwhile (newer, hence before the first page) neither repeat
// nor push anything out, and traces sharing one created_at microsecond are told apart by
// id.
type Cursor struct {
	CreatedAt time.Time // microsecond precision, as stored
	ID        string    // canonical UUID text
}

const cursorVersion = 1

// cursorEncoding is strict so that every accepted cursor has exactly one spelling.
var cursorEncoding = base64.RawURLEncoding.Strict()

// Encode returns the cursor's opaque text: base64url of a version byte, created_at in unix
// microseconds and the 16 id bytes.
func (c Cursor) Encode() string {
	var b [25]byte
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(c.CreatedAt.UnixMicro()))
	id, _ := uuid.Parse(c.ID) // ids come from the store: always UUIDs
	copy(b[9:], id[:])
	return cursorEncoding.EncodeToString(b[:])
}

// Earliest and latest created_at a cursor may carry: years 1 to 9999, the range both
// stores hold.
var (
	minCursorMicros = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	maxCursorMicros = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() - 1
)

var errBadCursor = errors.New("not a cursor this API returned")

// DecodeCursor parses a cursor made by Encode.
func DecodeCursor(s string) (Cursor, error) {
	if cursorEncoding.DecodedLen(len(s)) != 25 {
		return Cursor{}, errBadCursor
	}
	b, err := cursorEncoding.DecodeString(s)
	if err != nil || len(b) != 25 || b[0] != cursorVersion {
		return Cursor{}, errBadCursor
	}
	us := int64(binary.BigEndian.Uint64(b[1:9]))
	if us < minCursorMicros || us > maxCursorMicros {
		return Cursor{}, errBadCursor
	}
	id, _ := uuid.FromBytes(b[9:]) // 16 bytes: cannot fail
	return Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id.String()}, nil
}
