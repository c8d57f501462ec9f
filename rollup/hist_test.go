package rollup

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestBinLayout: every value falls in the bin whose bounds hold it, and the estimate of
// every value is within the stated bound.
func TestBinLayout(t *testing.T) {
	check := func(v int64) {
		k := Bin(v)
		if v <= 0 {
			if k != 0 || binValue(k) != 0 {
				t.Fatalf("Bin(%d) = %d", v, k)
			}
			return
		}
		if k < Bins-1 && (v < binLow[k] || (k+1 < Bins && v >= binLow[k+1] && binLow[k+1] > binLow[k])) {
			t.Fatalf("Bin(%d) = %d, bounds [%d, %d)", v, k, binLow[k], binLow[k+1])
		}
		e := binValue(k)
		if v < binLow[Bins-1] && math.Abs(float64(e-v)) > RelativeError*float64(v)+1 {
			t.Fatalf("estimate of %d is %d: beyond the bound", v, e)
		}
	}
	for v := int64(-3); v < 100000; v++ {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		check(r.Int64N(1 << 41))
	}
	check(math.MaxInt64)
	if Bin(math.MaxInt64) != Bins-1 || Bin(0) != 0 || Bin(1) != 1 {
		t.Errorf("edge bins: %d %d %d", Bin(math.MaxInt64), Bin(0), Bin(1))
	}
}

// TestQuantile: the histogram's percentile is within the bound of percentile_disc over the
// same values, also after merging encodings by concatenation.
func TestQuantile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 50 {
		n := 1 + r.IntN(3000)
		var parts [3]Hist
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = int64(math.Exp(r.NormFloat64()*2 + 10))
			parts[i%3].Add(vals[i])
		}
		var enc []byte
		for _, p := range parts {
			enc = p.AppendBinary(enc)
		}
		var h Hist
		if err := h.Decode(enc); err != nil {
			t.Fatal(err)
		}
		slices.Sort(vals)
		for _, q := range []float64{0.5, 0.95, 0.99} {
			rank := int(math.Ceil(q * float64(n)))
			want := vals[rank-1]
			got, ok := h.Quantile(q)
			if !ok || math.Abs(float64(got-want)) > RelativeError*float64(want)+1 {
				t.Errorf("trial %d: q%.2f of %d values: got %d, want %d within %.4f", trial, q, n, got, want, RelativeError)
			}
		}
		if h.Count() != int64(n) {
			t.Errorf("count %d, want %d", h.Count(), n)
		}
	}
	var empty Hist
	if _, ok := empty.Quantile(0.95); ok {
		t.Error("quantile of an empty histogram")
	}
	if err := empty.Decode([]byte{0xff}); err == nil {
		t.Error("decoded a truncated histogram")
	}
	if err := empty.Decode(binary.AppendUvarint(nil, Bins)); err == nil {
		t.Error("decoded a bin out of range")
	}
}
