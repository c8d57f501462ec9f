package rollup

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
)

// The histogram layout is fixed: stored histograms are only ever merged, so it never
// changes. Bin 0 holds the values ≤ 0; bin k (1 ≤ k < Bins-1) holds the integers v with
// ⌈γ^(k-1)⌉ ≤ v < ⌈γ^k⌉, γ = 2^(1/8) (eight bins per doubling); the last bin holds
// everything from ⌈γ^(Bins-2)⌉ = 2^40 (about 12.7 days in microseconds) up.
const (
	// BinsPerDoubling is the number of bins between v and 2v.
	BinsPerDoubling = 8
	// Bins is the number of bins.
	Bins = 40*BinsPerDoubling + 2
	// RelativeError bounds the error of a percentile read from a histogram: the estimate e
	// of a true value v (below 2^40) satisfies |e - v| ≤ RelativeError·v + 1 (the 1 is the
	// rounding to a whole microsecond). It is (γ-1)/(γ+1) for γ = 2^(1/8).
	RelativeError = 0.0433
)

var gamma = math.Pow(2, 1.0/BinsPerDoubling)

// binLow[k] is the smallest value of bin k (k ≥ 1).
var binLow = func() []int64 {
	low := make([]int64, Bins)
	for k := 1; k < Bins; k++ {
		low[k] = int64(math.Ceil(math.Pow(2, float64(k-1)/BinsPerDoubling)))
	}
	return low
}()

// Bin is the bin holding v.
func Bin(v int64) int {
	if v <= 0 {
		return 0
	}
	if v >= binLow[Bins-1] {
		return Bins - 1
	}
	// The largest k with binLow[k] ≤ v.
	k, _ := slices.BinarySearch(binLow[1:], v+1)
	return k
}

// Estimate is the value a histogram reports for a percentile whose exact value is v: the
// estimate of v's bin, within RelativeError of v.
func Estimate(v int64) int64 { return binValue(Bin(v)) }

// binValue is the estimate reported for a value in bin k: the point of the bin's real
// interval [γ^(k-1), γ^k) with the least relative error to either end, 2γ^k/(γ+1),
// rounded, and kept inside the integers the bin holds.
func binValue(k int) int64 {
	if k <= 0 {
		return 0
	}
	if k == Bins-1 {
		return binLow[k]
	}
	e := int64(math.Round(2 * math.Pow(gamma, float64(k)) / (gamma + 1)))
	return min(max(e, binLow[k]), binLow[k+1]-1)
}

// Hist is a histogram over the fixed bins, sparse: only bins with counts are kept, in
// ascending order. The zero value is empty.
type Hist struct{ bins []binCount }

type binCount struct {
	bin int32
	n   int64
}

// Add counts v once.
func (h *Hist) Add(v int64) { h.addBin(int32(Bin(v)), 1) }

func (h *Hist) addBin(bin int32, n int64) {
	i, found := slices.BinarySearchFunc(h.bins, bin, func(b binCount, t int32) int { return int(b.bin - t) })
	if found {
		h.bins[i].n += n
		return
	}
	h.bins = slices.Insert(h.bins, i, binCount{bin, n})
}

// Merge adds o's counts to h.
func (h *Hist) Merge(o Hist) {
	for _, b := range o.bins {
		h.addBin(b.bin, b.n)
	}
}

// Count is the number of values counted.
func (h Hist) Count() int64 {
	var n int64
	for _, b := range h.bins {
		n += b.n
	}
	return n
}

// Quantile estimates the q-quantile as percentile_disc does (the smallest value with at
// least q of the values at or below it), within RelativeError; false when h is empty.
func (h Hist) Quantile(q float64) (int64, bool) {
	n := h.Count()
	if n == 0 {
		return 0, false
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen int64
	for _, b := range h.bins {
		seen += b.n
		if seen >= rank {
			return binValue(int(b.bin)), true
		}
	}
	return binValue(int(h.bins[len(h.bins)-1].bin)), true
}

// AppendBinary appends h's encoding: a uvarint pair (bin, count) per non-empty bin. The
// encoding of a merge of histograms is the concatenation of their encodings, which is how
// stores merge histograms without decoding them (see Decode).
func (h Hist) AppendBinary(b []byte) []byte {
	for _, x := range h.bins {
		b = binary.AppendUvarint(b, uint64(x.bin))
		b = binary.AppendUvarint(b, uint64(x.n))
	}
	return b
}

// Encode is AppendBinary(nil); an empty histogram encodes as empty (non-nil) bytes.
func (h Hist) Encode() []byte { return h.AppendBinary([]byte{}) }

var errBadHist = errors.New("rollup: malformed histogram")

// Decode adds the counts of b, one encoding or a concatenation of several, to h.
func (h *Hist) Decode(b []byte) error {
	for len(b) > 0 {
		bin, n := binary.Uvarint(b)
		if n <= 0 || bin >= Bins {
			return errBadHist
		}
		b = b[n:]
		c, n := binary.Uvarint(b)
		if n <= 0 || c > math.MaxInt64 {
			return errBadHist
		}
		b = b[n:]
		h.addBin(int32(bin), int64(c))
	}
	return nil
}
