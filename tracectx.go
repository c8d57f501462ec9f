package loom

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/loom-gateway/loom/tracing"
)

// continueTrace reads the caller's trace context from r with p, notes in t the span Loom
// opens as its child (a new trace when the caller sent none, or an invalid one), and
// returns the header that carries Loom's span to the upstream. Only the ids travel: Loom
// records no OTel span here; a sink (otelsink) turns the trace into one off the request
// path.
func continueTrace(p propagation.TextMapPropagator, r *http.Request, t *tracing.Trace) http.Header {
	parent := trace.SpanContextFromContext(p.Extract(context.Background(), propagation.HeaderCarrier(r.Header)))
	cfg := trace.SpanContextConfig{TraceFlags: trace.FlagsSampled, SpanID: randomSpanID()}
	if parent.IsValid() {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
		t.W3CParentSpanID = parent.SpanID().String()
		t.W3CTraceState = parent.TraceState().String()
	} else {
		binary.BigEndian.PutUint64(cfg.TraceID[:8], rand.Uint64())
		binary.BigEndian.PutUint64(cfg.TraceID[8:], rand.Uint64()|1) // never all zero
	}
	sc := trace.NewSpanContext(cfg)
	t.W3CTraceID, t.W3CSpanID = sc.TraceID().String(), sc.SpanID().String()
	h := http.Header{}
	p.Inject(trace.ContextWithSpanContext(context.Background(), sc), propagation.HeaderCarrier(h))
	return h
}

// randomSpanID returns a span id; math/rand's generator is seeded per process from the
// OS and is enough for ids that need to be unique, not secret.
func randomSpanID() trace.SpanID {
	var id trace.SpanID
	binary.BigEndian.PutUint64(id[:], rand.Uint64()|1) // never all zero
	return id
}
