package loom

import (
	"time"

	"github.com/loom-gateway/loom/tracing"
)

// RequestInfo is what one chat completion came to, as Config.OnRequest sees it: the facts
// an access log line needs, never a key or a body.
type RequestInfo struct {
	TraceID  string // the trace's id, also the response's X-Request-Id
	TenantID string
	KeyID    string // the API key's id (not the key)
	Model    string // as the client asked for it
	Provider string // the route that served it; empty if none was reached
	Status   int    // HTTP status sent to the client
	// Latency is the whole time in the gateway; Overhead is Loom's own part of it.
	Latency, Overhead time.Duration
	ClientAborted     bool
}

// requestDone tells Config.OnRequest how a chat completion ended. A trace handed to the
// pipeline is the pipeline's: what it came to was taken as it was handed over (record
// always runs first).
func (g *Gateway) requestDone(x *exchange) {
	if g.cfg.OnRequest != nil {
		g.cfg.OnRequest(x.r, x.info)
	}
}

func requestInfo(t *tracing.Trace) RequestInfo {
	return RequestInfo{
		TraceID: t.ID, TenantID: t.TenantID, KeyID: t.APIKeyID, Model: t.Model, Provider: t.Provider, Status: t.Status,
		Latency: time.Duration(t.LatencyUS) * time.Microsecond, Overhead: time.Duration(t.OverheadUS) * time.Microsecond,
		ClientAborted: t.ClientAborted,
	}
}
