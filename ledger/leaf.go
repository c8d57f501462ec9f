package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/loom-gateway/loom/tracing"
)

// LeafVersion is the version byte of the encoding every new leaf is appended with. A
// change to the encoding gets a new version; verifiers keep reading the old ones.
const LeafVersion = LeafVersion2

// The leaf encodings (see Leaf.EncodeVersion).
const (
	// LeafVersion1 commits to the trace's metadata as the traces table first held it; it
	// leaves out the fields from UsageMethod on, added to traces later.
	LeafVersion1 = 1
	// LeafVersion2 commits to every stored metadata column of a trace.
	LeafVersion2 = 2
)

// Leaf is what a log commits to for one trace: its metadata as stored, and the SHA-256 of
// its sealed request and response (of the empty string when there is no body).
//
// In version 2 it covers every column of the traces table (migrations/postgres and
// migrations/sqlite alike): the sealed bodies by their hashes, every other column by its
// value. Month is no column: it is derived from created_at, and names the leaf's log.
// Nothing a trace stores is left out, none being derived from another column;
// tracing.Trace's W3C trace context is not stored in traces, so no leaf has it. A column
// added to traces needs a field here and a new version.
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
	// From here on: version 2 only.
	UsageMethod              string
	CacheWrite5mTokens       int64
	CacheWrite1hTokens       int64
	AudioPromptTokens        int64
	AudioCompletionTokens    int64
	AcceptedPredictionTokens int64
	RejectedPredictionTokens int64
	ServiceTier              string
	FinishReasons            []string
	// Both versions.
	RequestHash  [32]byte
	ResponseHash [32]byte
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
		UsageMethod: t.UsageMethod, CacheWrite5mTokens: t.CacheWrite5mTokens, CacheWrite1hTokens: t.CacheWrite1hTokens,
		AudioPromptTokens: t.AudioPromptTokens, AudioCompletionTokens: t.AudioCompletionTokens,
		AcceptedPredictionTokens: t.AcceptedPredictionTokens, RejectedPredictionTokens: t.RejectedPredictionTokens,
		ServiceTier: t.ServiceTier, FinishReasons: t.FinishReasons,
		RequestHash: sha256.Sum256(t.SealedRequest), ResponseHash: sha256.Sum256(t.SealedResponse),
	}
}

// Encode is the leaf's canonical bytes in the current version, LeafVersion.
func (l *Leaf) Encode() []byte { return l.EncodeVersion(LeafVersion) }

// EncodeVersion is the leaf's canonical bytes in version v (LeafVersion1 or LeafVersion2;
// any other encodes version 2): the version byte, then the fields in declaration order, those
// of version 2 only (UsageMethod to FinishReasons) left out in version 1. A string is its
// length (uint32, big-endian) and bytes; an integer 8 bytes big-endian; a bool one byte;
// the optional cost a presence byte and, if present, 8 bytes; a list of strings its count
// (uint32, big-endian) and then each string as above, nil and empty alike; a body hash its
// 32 bytes. Lengths make it unambiguous whatever bytes a field holds, and the version byte,
// hashed with the rest, keeps the encodings of two versions from ever being equal.
func (l *Leaf) EncodeVersion(v byte) []byte {
	if v != LeafVersion1 {
		v = LeafVersion2
	}
	b := make([]byte, 0, l.encodedSize(v))
	b = append(b, v)
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
	if v >= LeafVersion2 {
		str(l.UsageMethod)
		num(l.CacheWrite5mTokens)
		num(l.CacheWrite1hTokens)
		num(l.AudioPromptTokens)
		num(l.AudioCompletionTokens)
		num(l.AcceptedPredictionTokens)
		num(l.RejectedPredictionTokens)
		str(l.ServiceTier)
		b = binary.BigEndian.AppendUint32(b, uint32(len(l.FinishReasons)))
		for _, r := range l.FinishReasons {
			str(r)
		}
	}
	b = append(b, l.RequestHash[:]...)
	b = append(b, l.ResponseHash[:]...)
	return b
}

// encodedSize is the length of EncodeVersion(v), so it is built in one allocation.
func (l *Leaf) encodedSize(v byte) int {
	n := 1 + 11*4 + 11*8 + 4 + 1 + 2*32 // version, string lengths, integers, bools, cost presence, body hashes
	n += len(l.TenantID) + len(l.Month) + len(l.TraceID) + len(l.APIKeyID) + len(l.RequestID) + len(l.Model) +
		len(l.ServedModel) + len(l.Provider) + len(l.ErrorType) + len(l.UsageSource) + len(l.PriceVersion)
	if l.CostMicroUSD != nil {
		n += 8
	}
	if v != LeafVersion1 {
		n += 2*4 + 6*8 + 4 + len(l.UsageMethod) + len(l.ServiceTier) // two strings, six integers, the list's count
		for _, r := range l.FinishReasons {
			n += 4 + len(r)
		}
	}
	return n
}

// Hash is the leaf's RFC 6962 leaf hash in the current version, SHA-256(0x00 || Encode()).
func (l *Leaf) Hash() []byte { return rfc6962.DefaultHasher.HashLeaf(l.Encode()) }

// HashVersion is the leaf's RFC 6962 leaf hash in version v, SHA-256(0x00 || EncodeVersion(v)).
func (l *Leaf) HashVersion(v byte) []byte { return rfc6962.DefaultHasher.HashLeaf(l.EncodeVersion(v)) }

// logName names a log in reports: tenant and month.
func logName(tenant, month string) string { return fmt.Sprintf("%q/%s", tenant, month) }
