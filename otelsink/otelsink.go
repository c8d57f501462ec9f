// Package otelsink is a tracing.Sink that exports each Loom trace as an OpenTelemetry
// span, following the GenAI semantic conventions, through any OpenTelemetry span exporter
// (OTLP over HTTP or gRPC, for example).
//
// It runs in the trace pipeline beside the database sink, so it inherits the pipeline's
// spool and retries: a collector that is down delays spans, it does not lose them. A
// batch is exported whole or reported failed, and is offered again after a failure, so a
// collector may see a span twice (OTLP has no idempotent write); the span ids are the
// same both times.
//
// The package is apart from the gateway so that only embedders who export spans depend on
// the OpenTelemetry SDK.
package otelsink

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/loom-gateway/loom/tracing"
)

// Config configures New. Only Exporter is required.
type Config struct {
	// Exporter sends the spans, for example otlptracehttp.New or otlptracegrpc.New. Its
	// own retries should be off (WithRetry(RetryConfig{Enabled: false})): the trace
	// pipeline retries a failed batch, with the spool behind it. The sink shuts it down.
	Exporter sdktrace.SpanExporter
	// Resource describes the gateway process. If nil, service.name "loom".
	Resource *resource.Resource
	// ServerAddresses maps a trace's provider (the route name) to the upstream host,
	// reported as server.address. A provider not in the map has none.
	ServerAddresses map[string]string
	// ProviderNames maps a route name to its gen_ai.provider.name ("openai",
	// "anthropic", "azure.ai.openai", …). A route not in the map is reported by its name.
	ProviderNames map[string]string

	// CaptureContent exports the request messages and the response as the conventions'
	// gen_ai.input.messages and gen_ai.output.messages, on a
	// gen_ai.client.inference.operation.details event. Off by default: the bodies are
	// sealed, and a collector is seldom meant to hold prompts. It needs Open.
	CaptureContent bool
	// Open opens a sealed body: (*crypto.Keyring).Open. It is called with the trace's
	// tenant and tracing.BodyRecordID(trace id, part).
	Open func(tenantID, recordID string, keyVersion int, sealed []byte) ([]byte, error)
}

// Sink exports traces as spans. Make one with New.
type Sink struct {
	cfg   Config
	scope instrumentation.Scope
}

// New returns a Sink exporting through cfg.Exporter.
func New(cfg Config) (*Sink, error) {
	if cfg.Exporter == nil {
		return nil, errors.New("otelsink: Config.Exporter is required")
	}
	if cfg.CaptureContent && cfg.Open == nil {
		return nil, errors.New("otelsink: Config.CaptureContent needs Config.Open")
	}
	if cfg.Resource == nil {
		cfg.Resource = resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("loom"))
	}
	return &Sink{cfg: cfg, scope: instrumentation.Scope{Name: "github.com/loom-gateway/loom/otelsink", SchemaURL: semconv.SchemaURL}}, nil
}

// Name names the sink in Loom's metrics.
func (s *Sink) Name() string { return "otel" }

// WriteBatch exports one span per trace, all in one export call.
func (s *Sink) WriteBatch(ctx context.Context, batch []*tracing.Trace) error {
	spans := make([]sdktrace.ReadOnlySpan, 0, len(batch))
	for _, t := range batch {
		spans = append(spans, s.span(t).Snapshot())
	}
	if err := s.cfg.Exporter.ExportSpans(ctx, spans); err != nil {
		return fmt.Errorf("otelsink: export %d spans: %w", len(spans), err)
	}
	return nil
}

// Shutdown shuts the exporter down.
func (s *Sink) Shutdown(ctx context.Context) error {
	if err := s.cfg.Exporter.Shutdown(ctx); err != nil {
		return fmt.Errorf("otelsink: %w", err)
	}
	return nil
}

// span builds the span of one trace: a CLIENT span "chat {model}" (the gateway's call of
// a model, per the GenAI conventions), parented to the caller's span when the request
// carried a traceparent.
func (s *Sink) span(t *tracing.Trace) tracetest.SpanStub {
	sc, parent := spanContexts(t)
	provider := t.Provider
	if n, ok := s.cfg.ProviderNames[provider]; ok {
		provider = n
	}
	attrs := []attribute.KeyValue{
		attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.provider.name", provider),
		attribute.String("gen_ai.request.model", t.Model),
		attribute.Int("http.response.status_code", t.Status),
		attribute.String("loom.trace_id", t.ID),
		attribute.String("loom.tenant.id", t.TenantID),
		attribute.String("loom.api_key.id", t.APIKeyID),
		attribute.Bool("loom.stream", t.Stream),
		attribute.Int64("loom.latency_us", t.LatencyUS),
		attribute.Int64("loom.ttfb_us", t.TTFBUS),
		attribute.Int64("loom.overhead_us", t.OverheadUS),
		attribute.String("loom.usage.source", string(t.UsageSource)),
	}
	if t.ServedModel != "" {
		attrs = append(attrs, attribute.String("gen_ai.response.model", t.ServedModel))
	}
	if len(t.FinishReasons) > 0 {
		attrs = append(attrs, attribute.StringSlice("gen_ai.response.finish_reasons", t.FinishReasons))
	}
	if t.UsageSource != tracing.UsageMissing && t.UsageSource != "" {
		attrs = append(attrs,
			attribute.Int64("gen_ai.usage.input_tokens", t.PromptTokens),
			attribute.Int64("gen_ai.usage.output_tokens", t.CompletionTokens),
			attribute.Int64("loom.usage.cached_tokens", t.CachedTokens),
			attribute.Int64("loom.usage.reasoning_tokens", t.ReasoningTokens))
	}
	if a, ok := s.cfg.ServerAddresses[t.Provider]; ok {
		attrs = append(attrs, attribute.String("server.address", a))
	}
	if t.CostMicroUSD != nil {
		attrs = append(attrs, attribute.Int64("loom.cost.micro_usd", *t.CostMicroUSD),
			attribute.String("loom.price_version", t.PriceVersion))
	}
	if t.RequestID != "" {
		attrs = append(attrs, attribute.String("loom.request_id", t.RequestID))
	}
	if t.ClientAborted {
		attrs = append(attrs, attribute.Bool("loom.client_aborted", true))
	}
	var status sdktrace.Status
	if errType := errorType(t); errType != "" {
		attrs = append(attrs, attribute.String("error.type", errType))
		status = sdktrace.Status{Code: codes.Error, Description: errType}
	}
	name := "chat"
	if t.Model != "" {
		name += " " + t.Model
	}
	return tracetest.SpanStub{
		Name:                 name,
		SpanContext:          sc,
		Parent:               parent,
		SpanKind:             trace.SpanKindClient,
		StartTime:            t.CreatedAt,
		EndTime:              t.CreatedAt.Add(time.Duration(t.LatencyUS) * time.Microsecond),
		Attributes:           attrs,
		Events:               s.contentEvents(t),
		Status:               status,
		Resource:             s.cfg.Resource,
		InstrumentationScope: s.scope,
	}
}

// errorType is the conventions' error.type: the OpenAI error type Loom answered with, or
// the status code of a failed answer that has none.
func errorType(t *tracing.Trace) string {
	switch {
	case t.ErrorType != "":
		return t.ErrorType
	case t.Status >= 400:
		return strconv.Itoa(t.Status)
	}
	return ""
}

// spanContexts returns the span's own context and its parent's. A trace recorded without
// a Config.Propagator has no W3C ids: its span gets the Loom trace id (a UUID, 16 bytes)
// as trace id and the UUID's last 8 (random) bytes as span id, so an export repeated
// after a failure carries the same ids.
func spanContexts(t *tracing.Trace) (sc, parent trace.SpanContext) {
	tid, err := trace.TraceIDFromHex(t.W3CTraceID)
	sid, err2 := trace.SpanIDFromHex(t.W3CSpanID)
	if err != nil || err2 != nil {
		b, _ := hex.DecodeString(strings.ReplaceAll(t.ID, "-", ""))
		copy(tid[:], b)
		if len(b) == 16 {
			copy(sid[:], b[8:])
		}
	}
	ts, _ := trace.ParseTraceState(t.W3CTraceState)
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts}
	sc = trace.NewSpanContext(cfg)
	if psid, err := trace.SpanIDFromHex(t.W3CParentSpanID); err == nil {
		cfg.SpanID, cfg.Remote = psid, true
		parent = trace.NewSpanContext(cfg)
	}
	return sc, parent
}

// contentEvents returns the content event of t when content capture is on and its bodies
// open; a body that does not open is left out (and said so), never exported sealed.
func (s *Sink) contentEvents(t *tracing.Trace) []sdktrace.Event {
	if !s.cfg.CaptureContent || (t.SealedRequest == nil && t.SealedResponse == nil) {
		return nil
	}
	var attrs []attribute.KeyValue
	if req, err := s.cfg.Open(t.TenantID, tracing.BodyRecordID(t.ID, tracing.BodyRequest), t.KeyVersion, t.SealedRequest); err == nil && t.SealedRequest != nil {
		var body struct {
			Messages json.RawMessage `json:"messages"`
		}
		if json.Unmarshal(req, &body) == nil && body.Messages != nil {
			attrs = append(attrs, attribute.String("gen_ai.input.messages", string(body.Messages)))
		}
	}
	if resp, err := s.cfg.Open(t.TenantID, tracing.BodyRecordID(t.ID, tracing.BodyResponse), t.KeyVersion, t.SealedResponse); err == nil && t.SealedResponse != nil {
		attrs = append(attrs, attribute.String("gen_ai.output.messages", string(resp)))
	}
	if len(attrs) == 0 {
		attrs = append(attrs, attribute.Bool("loom.content.unavailable", true))
	}
	return []sdktrace.Event{{Name: "gen_ai.client.inference.operation.details", Time: t.CreatedAt, Attributes: attrs}}
}
