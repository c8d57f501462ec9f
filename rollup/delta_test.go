package rollup

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/loom-gateway/loom/tracing"
)

// FuzzDecodeDelta: any bytes decode to rows or an error, never a panic, and a delta's
// encoding decodes to its rows.
func FuzzDecodeDelta(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	var traces []*tracing.Trace
	for i := range 40 {
		c := r.Int64N(1000)
		traces = append(traces, &tracing.Trace{TenantID: "t", Provider: "p", Model: []string{"m", "<b>\x00ü"}[i%2], APIKeyID: "k",
			Status: []int{200, 429}[i%2], CreatedAt: time.Unix(1_700_000_000+int64(i)*37, 0), PromptTokens: r.Int64N(100),
			CostMicroUSD: &c, LatencyUS: r.Int64N(1e7), TTFBUS: r.Int64N(1e6), OverheadUS: -1})
	}
	ds := deltas(traces)
	if len(ds) != 1 {
		f.Fatalf("%d deltas for one tenant", len(ds))
	}
	enc := ds[0].encode()
	var got []Row
	if err := DecodeDelta("t", enc, func(r *Row) error { got = append(got, *r); return nil }); err != nil {
		f.Fatal(err)
	}
	if len(got) != len(ds[0].rows) {
		f.Fatalf("decoded %d rows, want %d", len(got), len(ds[0].rows))
	}
	for i, r := range got {
		w := ds[0].rows[i]
		if r.Key != w.Key || r.sums() != w.sums() || !bytes.Equal(r.Latency.Encode(), w.Latency.Encode()) ||
			!bytes.Equal(r.TTFB.Encode(), w.TTFB.Encode()) || !bytes.Equal(r.Overhead.Encode(), w.Overhead.Encode()) {
			f.Fatalf("row %d: decoded %+v, want %+v", i, r, *w)
		}
	}
	f.Add(enc)
	f.Add(enc[:len(enc)/2])
	f.Add([]byte{deltaVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		DecodeDelta("t", b, func(*Row) error { n++; return nil })
	})
}
