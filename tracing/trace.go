package tracing

import (
	"context"
	"time"
)

// UsageSource says where a trace's token counts came from.
type UsageSource string

const (
	// UsageReported: the provider reported the usage (response body or stream usage chunk).
	UsageReported UsageSource = "reported"
	// UsageEstimated: Loom estimated the usage because the provider did not report it.
	UsageEstimated UsageSource = "estimated"
	// UsageMissing: no usage is known (for example the client left before the usage chunk).
	UsageMissing UsageSource = "missing"
)

// Trace is the audit record of one request through the gateway.
//
// Every text field may hold what a client or an upstream sent. Before a trace is spooled
// or handed to any sink, the pipeline makes each text field valid UTF-8, NUL-free and at
// most its Max*Bytes length (setting FieldsCut if that changed anything), so every sink
// can store it as text.
//
// The gateway fills in everything but the cost and sealed fields before it hands the
// trace over; ID and CreatedAt are chosen before the trace is queued and never change, so
// a trace written twice (after a retry or a replay of the spool) is recognisably the same
// record. Durations are in microseconds.
type Trace struct {
	ID        string    // time-ordered UUIDv7
	CreatedAt time.Time // when the request arrived (UTC)
	TenantID  string
	APIKeyID  string
	RequestID string // the client's X-Request-Id, if any

	Model         string // as the client asked for it
	ServedModel   string // as the upstream reported it
	Provider      string
	Stream        bool
	Status        int    // HTTP status sent to the client
	ErrorType     string // OpenAI error type, empty on success
	ClientAborted bool   // the client left before the answer was complete
	// FinishReasons are why the upstream stopped generating, as the OpenAI format says it
	// ("stop", "length", "tool_calls", "content_filter"; Anthropic's stop_reason mapped
	// onto these): each reason once, in the order of the choices that finished with it.
	// Empty when no choice finished (an error, a stream cut short).
	FinishReasons []string

	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64 // subset of PromptTokens
	ReasoningTokens  int64 // subset of CompletionTokens
	UsageSource      UsageSource
	// UsageMethod says how an estimated usage was counted (for example
	// "tiktoken/o200k_base"); empty when the usage was reported.
	UsageMethod string
	// CacheWrite5mTokens and CacheWrite1hTokens: subset of PromptTokens written to the
	// provider's prompt cache with a 5-minute or 1-hour lifetime (Anthropic).
	CacheWrite5mTokens       int64
	CacheWrite1hTokens       int64
	AudioPromptTokens        int64  // subset of PromptTokens
	AudioCompletionTokens    int64  // subset of CompletionTokens
	AcceptedPredictionTokens int64  // subset of CompletionTokens (OpenAI predicted outputs)
	RejectedPredictionTokens int64  // subset of CompletionTokens, billed like the rest
	ServiceTier              string // as the upstream reported it ("default", "flex", …)

	// CostMicroUSD is the cost in millionths of a US dollar; nil when the model has no price.
	CostMicroUSD *int64
	PriceVersion string // the price table version the cost was computed with

	LatencyUS  int64 // total time in the gateway, arrival to last byte written
	TTFBUS     int64 // arrival to the first byte from the upstream; 0 if none arrived
	OverheadUS int64 // Loom's own time: before the upstream request plus after its last byte

	// The W3C Trace Context of the request, set when the gateway propagates one
	// (Config.Propagator), lowercase hex: the distributed trace, Loom's span in it (the
	// parent of the upstream call) and the caller's span, if the caller sent a traceparent.
	W3CTraceID      string
	W3CSpanID       string
	W3CParentSpanID string
	W3CTraceState   string // the caller's tracestate, carried on

	// RequestBody and ResponseBody are the plaintext bodies. They exist only in memory: the
	// pipeline seals them into SealedRequest/SealedResponse and clears them before the trace
	// is written anywhere, so a Sink never sees plaintext.
	RequestBody  []byte
	ResponseBody []byte
	// ResponseTruncated is set when the response body was longer than the capture limit.
	ResponseTruncated bool
	// FieldsCut is set by the pipeline when it changed a text field to make it store-safe:
	// cut to its maximum length (MaxModelBytes and the other Max*Bytes), or NUL or invalid
	// UTF-8 replaced with U+FFFD. See storesafe.go.
	FieldsCut bool
	// UpstreamRetries counts the times the upstream request was sent again on a new
	// connection (provider.Transport does so only where the upstream cannot have acted on
	// the first copy; see provider.CountRetries).
	UpstreamRetries int

	SealedRequest  []byte // AES-256-GCM ciphertext of RequestBody
	SealedResponse []byte // AES-256-GCM ciphertext of ResponseBody
	KeyVersion     int    // version of the master key the bodies were sealed with
}

// Sink stores traces. It is the plug-in point for any trace store (a database, an event
// pipeline, a file).
//
// WriteBatch writes the traces of one batch, durably, and returns nil only when all of them
// are stored: a nil return lets the caller discard its copy. A batch is written in one
// transaction where the store has them. The same trace may be offered again after a
// failure or a restart (same ID): a sink should store it once (for example by ignoring a
// duplicate ID). WriteBatch must honour ctx; retries and backoff belong to the caller, so a
// sink returns its error at once. The traces' bodies are already sealed. The same *Trace
// values go to every sink of a Pipeline at once: a sink must treat them as read-only, and
// must not keep the slice after returning.
//
// Shutdown releases the sink's resources; it is called once, after the last WriteBatch.
type Sink interface {
	WriteBatch(ctx context.Context, batch []*Trace) error
	Shutdown(ctx context.Context) error
}

// Recorder receives each finished request's trace from the gateway. Record is on the
// request path: it must not wait on a store. It returns an error only when the trace could
// not be kept (and has been counted as lost); in a strict durability mode it may wait for a
// local durable append, bounded by ctx (if ctx ends first it says so, though the trace is
// still kept: see ErrNotDurable).
type Recorder interface {
	Record(ctx context.Context, t *Trace) error
}

// Sealer encrypts a trace body for one tenant and record; package crypto's Keyring is one.
// The pipeline seals each body under BodyRecordID(trace id, BodyRequest or BodyResponse),
// and the sealed bytes open only with the same tenant and record id.
type Sealer interface {
	Seal(tenantID, recordID string, plaintext []byte) (sealed []byte, keyVersion int, err error)
}

// The parts of a trace whose bodies are sealed, for BodyRecordID.
const (
	BodyRequest  = "request"
	BodyResponse = "response"
)

// BodyRecordID is the record id a trace's body is sealed under (with its tenant id): the
// trace id and the part, "<traceID>/request" or "<traceID>/response". Binding the part
// means a request body and a response body cannot be swapped, within a trace or across
// traces, without failing to open. Open a stored body with the same record id, for example
// keyring.Open(t.TenantID, tracing.BodyRecordID(t.ID, tracing.BodyResponse), t.KeyVersion,
// t.SealedResponse). (Traces stored by Loom builds before this one were sealed under the
// bare trace id.)
func BodyRecordID(traceID, part string) string { return traceID + "/" + part }
