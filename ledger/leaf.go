package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/loom-gateway/loom/tracing"
)

// LeafVersion is the version byte every leaf encoding starts with. A change to the
// encoding gets a new version; verifiers keep reading the old ones.
const LeafVersion = 1

// Leaf is what a log commits to for one trace: its metadata as stored, and the SHA-256 of
// its sealed request and response (of the empty string when there is no body).
type Leaf struct {
	TenantID          string
	Month             string // UTC month of CreatedAt, "YYYY-MM"
	TraceID           string // as the store returns it (PostgreSQL: lowercase with dashes)
	CreatedAtUS       int64  // unix microseconds, the stores' precision
	APIKeyID          string
	RequestID         string
	Model             string
	ServedModel       string
	Provider          string
	Stream            bool
	Status            int64
	ErrorType         string
	ClientAborted     bool
	PromptTokens      int64
	CompletionTokens  int64
	CachedTokens      int64
	ReasoningTokens   int64
	UsageSource       string
	CostMicroUSD      *int64
	PriceVersion      string
	LatencyUS         int64
	TTFBUS            int64
	OverheadUS        int64
	ResponseTruncated bool
	FieldsCut         bool
	UpstreamRetries   int64
	KeyVersion        int64
	RequestHash       [32]byte
	ResponseHash      [32]byte
}

// Month is the log a time falls in: its UTC month as "YYYY-MM".
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

// LeafOf is the leaf of trace t, whose id the store keeps as id.
func LeafOf(t *tracing.Trace, id string) Leaf {
	return Leaf{
		TenantID: t.TenantID, Month: Month(t.CreatedAt), TraceID: id, CreatedAtUS: t.CreatedAt.UnixMicro(),
		APIKeyID: t.APIKeyID, RequestID: t.RequestID, Model: t.Model, ServedModel: t.ServedModel,
		Provider: t.Provider, Stream: t.Stream, Status: int64(t.Status), ErrorType: t.ErrorType,
		ClientAborted: t.ClientAborted, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens,
		CachedTokens: t.CachedTokens, ReasoningTokens: t.ReasoningTokens, UsageSource: string(t.UsageSource),
		CostMicroUSD: t.CostMicroUSD, PriceVersion: t.PriceVersion, LatencyUS: t.LatencyUS, TTFBUS: t.TTFBUS,
		OverheadUS: t.OverheadUS, ResponseTruncated: t.ResponseTruncated, FieldsCut: t.FieldsCut,
		UpstreamRetries: int64(t.UpstreamRetries), KeyVersion: int64(t.KeyVersion),
		RequestHash: sha256.Sum256(t.SealedRequest), ResponseHash: sha256.Sum256(t.SealedResponse),
	}
}

// Encode is the leaf's canonical bytes: the version byte, then every field in declaration
// order; a string is its length (uint32, big-endian) and bytes, an integer 8 bytes
// big-endian, a bool one byte, the optional cost a presence byte and, if present, 8 bytes.
// Lengths make it unambiguous whatever bytes a field holds.
func (l *Leaf) Encode() []byte {
	b := make([]byte, 0, 256)
	b = append(b, LeafVersion)
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) { b = binary.BigEndian.AppendUint64(b, uint64(n)) }
	flag := func(v bool) {
		if v {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	str(l.TenantID)
	str(l.Month)
	str(l.TraceID)
	num(l.CreatedAtUS)
	str(l.APIKeyID)
	str(l.RequestID)
	str(l.Model)
	str(l.ServedModel)
	str(l.Provider)
	flag(l.Stream)
	num(l.Status)
	str(l.ErrorType)
	flag(l.ClientAborted)
	num(l.PromptTokens)
	num(l.CompletionTokens)
	num(l.CachedTokens)
	num(l.ReasoningTokens)
	str(l.UsageSource)
	flag(l.CostMicroUSD != nil)
	if l.CostMicroUSD != nil {
		num(*l.CostMicroUSD)
	}
	str(l.PriceVersion)
	num(l.LatencyUS)
	num(l.TTFBUS)
	num(l.OverheadUS)
	flag(l.ResponseTruncated)
	flag(l.FieldsCut)
	num(l.UpstreamRetries)
	num(l.KeyVersion)
	b = append(b, l.RequestHash[:]...)
	b = append(b, l.ResponseHash[:]...)
	return b
}

// Hash is the leaf's RFC 6962 leaf hash, SHA-256(0x00 || Encode()).
func (l *Leaf) Hash() []byte { return rfc6962.DefaultHasher.HashLeaf(l.Encode()) }

// logName names a log in reports: tenant and month.
func logName(tenant, month string) string { return fmt.Sprintf("%q/%s", tenant, month) }
