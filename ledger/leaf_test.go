package ledger

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/loom-gateway/loom/tracing"
)

// TestLeafEncoding pins both leaf encodings: a change to either must come with a new
// LeafVersion, and version 1 must stay as it is for the logs written with it.
func TestLeafEncoding(t *testing.T) {
	cost := int64(5)
	l := Leaf{
		TenantID: "t", Month: "2026-11", TraceID: "id", CreatedAtUS: 1, APIKeyID: "k", RequestID: "",
		Model: "m", ServedModel: "s", Provider: "p", Stream: true, Status: 200, ErrorType: "", ClientAborted: false,
		PromptTokens: 3, CompletionTokens: 4, CachedTokens: 1, ReasoningTokens: 2, UsageSource: "reported",
		CostMicroUSD: &cost, PriceVersion: "v", LatencyUS: 6, TTFBUS: 7, OverheadUS: 8,
		ResponseTruncated: false, FieldsCut: true, UpstreamRetries: 1, KeyVersion: 9,
		UsageMethod: "u", CacheWrite5mTokens: 10, CacheWrite1hTokens: 11, AudioPromptTokens: 12,
		AudioCompletionTokens: 13, AcceptedPredictionTokens: 14, RejectedPredictionTokens: 15,
		ServiceTier: "flex", FinishReasons: []string{"stop", "length"},
	}
	for i := range 32 {
		l.RequestHash[i], l.ResponseHash[i] = 0xaa, 0xbb
	}
	common := "00000001" + "74" + // tenant
		"00000007" + "323032362d3131" + // month
		"00000002" + "6964" + // trace id
		"0000000000000001" + // created_at
		"00000001" + "6b" + "00000000" + // api key, request id
		"00000001" + "6d" + "00000001" + "73" + "00000001" + "70" + // model, served model, provider
		"01" + "00000000000000c8" + "00000000" + "00" + // stream, status, error type, client aborted
		"0000000000000003" + "0000000000000004" + "0000000000000001" + "0000000000000002" + // tokens
		"00000008" + "7265706f72746564" + // usage source
		"01" + "0000000000000005" + // cost, present
		"00000001" + "76" + // price version
		"0000000000000006" + "0000000000000007" + "0000000000000008" + // latency, ttfb, overhead
		"00" + "01" + "0000000000000001" + "0000000000000009" // truncated, fields cut, retries, key version
	v2only := "00000001" + "75" + // usage method
		"000000000000000a" + "000000000000000b" + "000000000000000c" + // cache writes 5m 1h, audio prompt
		"000000000000000d" + "000000000000000e" + "000000000000000f" + // audio completion, predictions
		"00000004" + "666c6578" + // service tier
		"00000002" + "00000004" + "73746f70" + "00000006" + "6c656e677468" // finish reasons
	bodies := strings.Repeat("aa", 32) + strings.Repeat("bb", 32)
	wantV1, wantV2 := "01"+common+bodies, "02"+common+v2only+bodies

	if got := fmt.Sprintf("%x", l.EncodeVersion(LeafVersion1)); got != wantV1 {
		t.Errorf("version 1 encoding\n got %s\nwant %s", got, wantV1)
	}
	if got := fmt.Sprintf("%x", l.EncodeVersion(LeafVersion2)); got != wantV2 {
		t.Errorf("version 2 encoding\n got %s\nwant %s", got, wantV2)
	}
	if LeafVersion != LeafVersion2 || !bytes.Equal(l.Encode(), l.EncodeVersion(LeafVersion2)) {
		t.Errorf("new leaves are not of version 2 (LeafVersion %d)", LeafVersion)
	}
	for _, v := range []byte{LeafVersion1, LeafVersion2} {
		if got, want := l.HashVersion(v), rfc6962.DefaultHasher.HashLeaf(l.EncodeVersion(v)); !bytes.Equal(got, want) {
			t.Errorf("version %d: hash is not the RFC 6962 leaf hash of the encoding", v)
		}
	}
	if !bytes.Equal(l.Hash(), l.HashVersion(LeafVersion2)) {
		t.Error("Hash is not the version 2 hash")
	}

	// No cost, no finish reasons (nil or empty alike): a presence byte 0, a count 0.
	l.CostMicroUSD = nil
	for _, fr := range [][]string{nil, {}} {
		l.FinishReasons = fr
		want := "02" + strings.Replace(common, "01"+"0000000000000005", "00", 1) +
			strings.Replace(v2only, "00000002"+"00000004"+"73746f70"+"00000006"+"6c656e677468", "00000000", 1) + bodies
		if got := fmt.Sprintf("%x", l.EncodeVersion(LeafVersion2)); got != want {
			t.Errorf("finish reasons %#v: encoding\n got %s\nwant %s", fr, got, want)
		}
	}
	// The counts keep lists apart that concatenate alike.
	a, b := l, l
	a.FinishReasons, b.FinishReasons = []string{"ab", ""}, []string{"ab"}
	if bytes.Equal(a.Encode(), b.Encode()) {
		t.Error(`finish reasons ["ab", ""] and ["ab"] encode alike`)
	}
}

// TestLeafVersionsMixed: a log begun with version 1 leaves, by a Loom from before version 2,
// and continued with version 2 leaves verifies on both stores, and an edit is still caught
// on either kind of row, as is a version 2 leaf replaced by the row's version 1 leaf.
func TestLeafVersionsMixed(t *testing.T) {
	type setup struct {
		old, oldB, fresh, tail []*tracing.Trace // version 1: acme/2026-11, acme/2026-10; version 2: acme/2026-11
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, f *fixture, s setup) []found
		v1     int // rows matching a version 1 leaf
	}{
		{"clean", func(*testing.T, *fixture, setup) []found { return nil }, 6},
		{"version 1 row edited", func(t *testing.T, f *fixture, s setup) []found {
			f.unlock(t)
			f.exec(t, fmt.Sprintf("UPDATE traces SET completion_tokens = 1 WHERE id = '%s'", s.old[1].ID))
			return []found{{RowEdited, logA, 1, s.old[1].ID}}
		}, 5},
		{"version 2 rows edited", func(t *testing.T, f *fixture, s setup) []found {
			f.unlock(t)
			v := `'{}'`
			if f.dialect == SQLite {
				v = `'[]'`
			}
			f.exec(t, fmt.Sprintf("UPDATE traces SET finish_reasons = %s WHERE id = '%s'", v, s.fresh[1].ID))
			f.exec(t, fmt.Sprintf("UPDATE traces SET cache_write_5m_tokens = 7 WHERE id = '%s'", s.tail[0].ID))
			return []found{{RowEdited, logA, 5, s.fresh[1].ID}, {RowEdited, logA, 7, s.tail[0].ID}}
		}, 6},
		{"version 2 leaf passed off as version 1", func(t *testing.T, f *fixture, s setup) []found {
			f.unlock(t)
			tr := *s.fresh[1]
			tr.FinishReasons = nil
			v, q := `'{}'`, "UPDATE ledger_leaves SET leaf_hash = $1 WHERE trace_id = $2"
			if f.dialect == SQLite {
				v, q = `'[]'`, "UPDATE ledger_leaves SET leaf_hash = ? WHERE trace_id = ?"
			}
			f.exec(t, fmt.Sprintf("UPDATE traces SET finish_reasons = %s WHERE id = '%s'", v, tr.ID))
			l := LeafOf(&tr, tr.ID)
			if _, err := f.db.ExecContext(t.Context(), q, l.HashVersion(LeafVersion1), tr.ID); err != nil {
				t.Fatal(err)
			}
			return []found{{RootMismatch, logA, -1, ""}, {BadHead, logA, -1, ""}}
		}, 7},
	} {
		for _, d := range dialects {
			t.Run(tc.name+"/"+d, func(t *testing.T) {
				f := emptyFixture(t, d)
				s := setup{
					old: testTraces("acme", monthA, 4), oldB: testTraces("acme", monthB, 2),
					fresh: testTraces("acme", monthA.Add(time.Hour), 3), tail: testTraces("acme", monthA.Add(2*time.Hour), 1),
				}
				v1 := f.v1Sink(t)
				f.write(t, v1, append(append([]*tracing.Trace{}, s.old[:2]...), s.oldB...))
				f.write(t, v1, s.old[2:])
				f.checkpoint(t, f.signer)
				f.write(t, f.sink, s.fresh)
				f.checkpoint(t, f.signer)
				f.write(t, f.sink, s.tail)

				// The leaves are of the versions meant, so the verification below reads both.
				for v, trs := range map[byte][]*tracing.Trace{LeafVersion1: append(s.old, s.oldB...), LeafVersion2: append(s.fresh, s.tail...)} {
					for _, tr := range trs {
						l := LeafOf(tr, tr.ID)
						if got, want := f.storedLeafHash(t, tr.ID), l.HashVersion(v); !bytes.Equal(got, want) {
							t.Fatalf("trace %s: stored leaf is not its version %d leaf", tr.ID, v)
						}
					}
				}

				want := tc.tamper(t, f, s)
				for _, deep := range []bool{false, true} {
					rep := f.verify(t, deep)
					if diff := cmp.Diff(want, founds(rep)); diff != "" {
						t.Errorf("deep=%v failures (-want +got):\n%s", deep, diff)
					}
					for _, fl := range rep.Failures {
						t.Log(fl)
					}
					if rep.Traces != 10 || rep.TracesV1 != tc.v1 {
						t.Errorf("deep=%v: read %d traces, %d of version 1; want 10, %d", deep, rep.Traces, rep.TracesV1, tc.v1)
					}
					if want != nil {
						continue
					}
					wantLogs := []LogStatus{
						{Log: logB, Leaves: 2, Checkpointed: 2},
						{Log: logA, Leaves: 8, Checkpointed: 7, Unanchored: 1},
					}
					if diff := cmp.Diff(wantLogs, rep.Logs); diff != "" {
						t.Errorf("deep=%v logs (-want +got):\n%s", deep, diff)
					}
				}
			})
		}
	}
}

// storedLeafHash is the leaf hash the database holds for trace id.
func (f *fixture) storedLeafHash(t *testing.T, id string) []byte {
	t.Helper()
	q := "SELECT leaf_hash FROM ledger_leaves WHERE trace_id = ?"
	if f.dialect == Postgres {
		q = "SELECT leaf_hash FROM ledger_leaves WHERE trace_id = $1::uuid"
	}
	var h []byte
	if err := f.db.QueryRowContext(t.Context(), q, id).Scan(&h); err != nil {
		t.Fatalf("leaf of %s: %v", id, err)
	}
	return h
}

// TestLeafEncodedSize: the encoding is built in one allocation of its exact size.
func TestLeafEncodedSize(t *testing.T) {
	for _, tr := range testTraces("we ird\n", monthA, 6) {
		l := LeafOf(tr, tr.ID)
		for _, v := range []byte{LeafVersion1, LeafVersion2} {
			if b := l.EncodeVersion(v); len(b) != cap(b) || len(b) != l.encodedSize(v) {
				t.Errorf("version %d: %d bytes in %d, size says %d", v, len(b), cap(b), l.encodedSize(v))
			}
		}
	}
}

// TestParseFinishReasons: the column reads as encoding/json reads it, fast path or not, and
// what no sink writes is refused.
func TestParseFinishReasons(t *testing.T) {
	for _, tt := range []struct {
		col  string
		want []string // nil with ok false: refused
		ok   bool
	}{
		{`[]`, nil, true},
		{`[ ]`, []string{}, true},
		{`["stop"]`, []string{"stop"}, true},
		{`["stop","length"]`, []string{"stop", "length"}, true},
		{`[""]`, []string{""}, true},
		{`["a","","b"]`, []string{"a", "", "b"}, true},
		{`["st\u006fp"]`, []string{"stop"}, true},
		{`["a\"b"]`, []string{`a"b`}, true},
		{`["a" , "b"]`, []string{"a", "b"}, true},
		{`["Ω","\ufffd"]`, []string{"Ω", "\ufffd"}, true},
		{`["a","b`, nil, false},
		{`["a"b"]`, nil, false},
		{"[\"a\x01\"]", nil, false},
		{"[\"\xff\"]", nil, false},
		{`[null]`, nil, false},
		{`["a",null]`, nil, false},
		{`[["stop"]]`, nil, false},
		{`null`, nil, false},
		{`{}`, nil, false},
		{`"stop"`, nil, false},
		{``, nil, false},
	} {
		got, err := parseFinishReasons(tt.col)
		if (err == nil) != tt.ok {
			t.Errorf("%q: error %v, want ok %v", tt.col, err, tt.ok)
			continue
		}
		if tt.ok && (len(got) != len(tt.want) || !cmp.Equal(append([]string{}, got...), append([]string{}, tt.want...))) {
			t.Errorf("%q: got %q, want %q", tt.col, got, tt.want)
		}
	}
}
