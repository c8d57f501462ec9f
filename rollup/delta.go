package rollup

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/loom-gateway/loom/tracing"
)

// A delta is what one batch adds to one tenant's rollups: its minute rows (one per
// provider, model, API key and status class in each minute), stored as one row of
// trace_rollup_deltas until a Folder adds them to the rollup tables.
type delta struct {
	tenantID    string
	first, last time.Time // the first and last minute of the rows
	rows        []*Row    // minute rows
}

// deltas counts the stored traces into one delta per tenant, in the order of the tenants'
// first traces. No row of trace_rollup_deltas is updated, so unlike the folder's rows
// they need no order. It runs inside the sink's transaction, once per batch, so it
// allocates per batch, not per row: the rows and the first bin of each histogram come from
// two slices as long as the batch.
func deltas(traces []*tracing.Trace) []delta {
	var (
		out     []delta
		tenants = map[string]int{} // tenant → its delta in out
		index   = make(map[Key]int, len(traces))
		rows    = make([]Row, 0, len(traces)) // never grows: a row per trace at most
		bins    = make([]binCount, 3*len(traces))
	)
	for _, t := range traces {
		k := traceKey(t, time.Minute)
		i, ok := index[k]
		if !ok {
			i = len(rows)
			index[k] = i
			b := bins[3*i : 3*i+3 : 3*i+3]
			rows = append(rows, Row{Key: k, Counts: Counts{Latency: Hist{b[0:0:1]}, TTFB: Hist{b[1:1:2]}, Overhead: Hist{b[2:2:3]}}})
			j, ok := tenants[k.TenantID]
			if !ok {
				j = len(out)
				tenants[k.TenantID] = j
				out = append(out, delta{tenantID: k.TenantID, first: k.Start, last: k.Start})
			}
			d := &out[j]
			if k.Start.Before(d.first) {
				d.first = k.Start
			}
			if k.Start.After(d.last) {
				d.last = k.Start
			}
			d.rows = append(d.rows, &rows[i])
		}
		rows[i].addTrace(t)
	}
	return out
}

// deltaVersion is the first byte of the encoding.
const deltaVersion = 1

// encode is the delta's rows column: the version, the row count, then per row its
// provider, model and API key (uvarint length and bytes), status class (uvarint), start
// (varint unix microseconds), the 11 sums (varints) and the three histograms (uvarint
// length and Hist encoding).
func (d delta) encode() []byte {
	b := make([]byte, 1, 64+96*len(d.rows))
	b[0] = deltaVersion
	var scratch []byte
	b = binary.AppendUvarint(b, uint64(len(d.rows)))
	for _, r := range d.rows {
		for _, s := range [3]string{r.Provider, r.Model, r.APIKeyID} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		b = binary.AppendUvarint(b, uint64(r.StatusClass))
		b = binary.AppendVarint(b, r.Start.UnixMicro())
		for _, v := range r.sums() {
			b = binary.AppendVarint(b, v)
		}
		for _, h := range [3]Hist{r.Latency, r.TTFB, r.Overhead} {
			scratch = h.AppendBinary(scratch[:0])
			b = binary.AppendUvarint(b, uint64(len(scratch)))
			b = append(b, scratch...)
		}
	}
	return b
}

var errDelta = errors.New("rollup: malformed delta")

// DecodeDelta calls fn with each minute row of the tenant's delta encoded in b (the rows
// column of trace_rollup_deltas). The row is reused between calls.
func DecodeDelta(tenantID string, b []byte, fn func(*Row) error) error {
	if len(b) == 0 || b[0] != deltaVersion {
		return errDelta
	}
	b = b[1:]
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	bytes := func() []byte {
		n := uv()
		if n > uint64(len(b)) {
			b = nil
			return nil
		}
		out := b[:n]
		b = b[n:]
		return out
	}
	count := uv()
	var r Row
	for range count {
		if b == nil {
			return errDelta
		}
		r = Row{Key: Key{TenantID: tenantID, Grain: time.Minute}}
		r.Provider, r.Model, r.APIKeyID = string(bytes()), string(bytes()), string(bytes())
		r.StatusClass = int(uv())
		us, n := binary.Varint(b)
		if n <= 0 {
			return errDelta
		}
		b = b[n:]
		r.Start = time.UnixMicro(us).UTC()
		var sums [nSums]int64
		for i := range sums {
			v, n := binary.Varint(b)
			if n <= 0 {
				return errDelta
			}
			b, sums[i] = b[n:], v
		}
		r.setSums(sums)
		for _, h := range []*Hist{&r.Latency, &r.TTFB, &r.Overhead} {
			enc := bytes()
			if b == nil {
				return errDelta
			}
			if err := h.Decode(enc); err != nil {
				return err
			}
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if len(b) != 0 {
		return errDelta
	}
	return nil
}

// setSums sets the additive counts, in sums order.
func (c *Counts) setSums(s [nSums]int64) {
	c.Requests, c.PromptTokens, c.CompletionTokens, c.CachedTokens, c.ReasoningTokens, c.CostMicroUSD,
		c.Unpriced, c.LatencyUS, c.TTFBUS, c.TTFBCount, c.OverheadUS = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10]
}
