package analytics

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Cursor
	}{
		{"now", Cursor{CreatedAt: time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC), ID: "01a2310d-4eef-7ea8-ab4b-c9ba5a3249a8"}},
		{"year 1", Cursor{CreatedAt: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ID: "00000000-0000-0000-0000-000000000000"}},
		{"year 9999", Cursor{CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), ID: "ffffffff-ffff-ffff-ffff-ffffffffffff"}},
		{"before 1970", Cursor{CreatedAt: time.Date(1969, 7, 20, 20, 17, 0, 1000, time.UTC), ID: "01a2310d-4eef-7ea8-ab4b-c9ba5a3249a8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCursor(tt.c.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.c, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeCursorRefuses(t *testing.T) {
	good := Cursor{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), ID: "01a2310d-4eef-7ea8-ab4b-c9ba5a3249a8"}.Encode()
	tests := []struct{ name, s string }{
		{"empty", ""},
		{"short", good[:len(good)-1]},
		{"long", good + "A"},
		{"padded", good + "=="},
		{"standard alphabet", "+" + good[1:]},
		{"non-canonical last char", good[:len(good)-1] + string(good[len(good)-1]+1)},
		{"wrong version", "Ag" + good[2:]},
		{"NUL", "\x00" + good[1:]},
		{"year 10000", Cursor{CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}.Encode()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := DecodeCursor(tt.s); err == nil {
				t.Errorf("DecodeCursor(%q) = %+v, want an error", tt.s, c)
			}
		})
	}
}

// FuzzDecodeCursor: any input either fails or decodes to a cursor whose encoding is the
// input itself (one spelling per cursor), never panics.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(Cursor{CreatedAt: time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC), ID: "01a2310d-4eef-7ea8-ab4b-c9ba5a3249a8"}.Encode())
	f.Add("")
	f.Add("AQAGYY-b_Bt1AaIxDU7gcdScqoKrDFLfbA")
	f.Add("////////////////////////////////////")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := DecodeCursor(s)
		if err != nil {
			return
		}
		if got := c.Encode(); got != s {
			t.Fatalf("DecodeCursor(%q) = %+v, which encodes as %q", s, c, got)
		}
		if c.CreatedAt.Location() != time.UTC || c.CreatedAt.Nanosecond()%1000 != 0 {
			t.Fatalf("created_at %v is not UTC microseconds", c.CreatedAt)
		}
	})
}
