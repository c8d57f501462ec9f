package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// histogram counts durations in nanoseconds in log-linear buckets, like HdrHistogram with
// two significant digits: values below 256 ns have a bucket each, and every power of two
// above is split into 128 buckets, so a bucket is at most 1/128 (0.8 %) of its values
// wide. Memory is fixed (about 43 KB) however long the run; recording is one atomic add,
// so all workers share one histogram. Values are clamped to [0, 2^48) ns (78 hours).
//
// Percentiles are nearest-rank over the buckets and report the bucket's highest value
// (capped at the exact maximum): never below the true percentile, at most 0.8 % above.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
}

const (
	subBits    = 7
	subCount   = 1 << subBits // buckets per power of two
	linearMax  = 2 * subCount // values below have a bucket each
	maxBits    = 48
	numBuckets = linearMax + (maxBits-subBits-1)*subCount
)

func bucketOf(v int64) int {
	if v < linearMax {
		return int(v)
	}
	if v >= 1<<maxBits {
		v = 1<<maxBits - 1
	}
	shift := bits.Len64(uint64(v)) - subBits - 1 // ≥ 1
	top := int(v >> shift)                       // in [subCount, 2*subCount)
	return linearMax + (shift-1)*subCount + top - subCount
}

// upperOf is the highest value that falls in bucket i.
func upperOf(i int) int64 {
	if i < linearMax {
		return int64(i)
	}
	shift := (i-linearMax)/subCount + 1
	top := int64(subCount + (i-linearMax)%subCount)
	return (top+1)<<shift - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (h *histogram) count() uint64 { return h.n.Load() }

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100), 0 when empty.
// Call it once recording has stopped.
func (h *histogram) percentile(p float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(upperOf(i), h.max.Load())
		}
	}
	return h.max.Load()
}

func (h *histogram) mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}
