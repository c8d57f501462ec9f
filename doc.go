// Package loom is an OpenAI-compatible LLM gateway you mount in your own Go server.
//
// New returns a Gateway, an http.Handler serving POST /v1/chat/completions (streaming and
// not) and GET /v1/models. Each request is authenticated by a tenant's API key
// (package tenancy), routed by its model to a provider (package provider), relayed
// without buffering whole streams (package stream), and recorded as an immutable,
// encrypted trace handed to an asynchronous, durable pipeline (packages tracing, crypto,
// pricing) — never written on the request path.
//
// The root package holds the request path and wires the subpackages; it is the one place
// where errors become OpenAI error JSON. The subpackages never import it, so each can be
// used and tested alone: a custom provider implements provider.Provider, a custom trace
// store implements tracing.Sink.
//
// examples/server runs a Gateway standalone with its stores, health endpoints and
// graceful shutdown.
package loom
