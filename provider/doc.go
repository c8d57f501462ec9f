// Package provider talks to LLM upstreams.
//
// A Provider takes a chat completion request in the OpenAI wire format and returns the
// upstream's answer in the same format (a JSON body, or an SSE stream of chunks), or an
// *UpstreamError with the upstream's own status and body. OpenAI, Azure OpenAI (classic
// deployments path and /openai/v1/) and any OpenAI-compatible upstream are passed through
// byte for byte; Anthropic translates the Messages API both ways, streaming included; Mock
// answers by itself for offline use and tests.
//
// The package also owns what Loom reads of the wire format — ParseChatRequest for the
// request, ReadCompletion and Usage for answers and stream chunks — done by walking the
// top level of the JSON rather than decoding it, so relaying costs no re-encoding; and
// Transport, an http.RoundTripper that does an upstream call entirely on the calling
// goroutine.
package provider
