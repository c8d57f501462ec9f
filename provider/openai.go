package provider

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// NewTransport returns an http.Transport tuned for a gateway, for upstreams that need what
// Transport lacks (an HTTP proxy, HTTP/2): many idle keep-alive
// connections per upstream host (the default of 2 would open a new connection for most
// concurrent requests), no compression negotiation (bodies are relayed as they come), and
// HTTP/2 where the upstream offers it over TLS.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
}

// OpenAIConfig configures an OpenAI or OpenAI-compatible upstream.
type OpenAIConfig struct {
	// BaseURL is the API root, ending in /v1. If empty, https://api.openai.com/v1 is used.
	BaseURL string
	// APIKey is sent as a bearer token. If empty, no Authorization header is sent (local
	// upstreams such as Ollama need none).
	APIKey string
	// Organization and Project, if set, are sent as OpenAI-Organization and OpenAI-Project.
	Organization, Project string
	// ClientHeaders lists the client request headers passed on to the upstream, from
	// OpenAIHeaders (OpenAI-Organization, OpenAI-Project, OpenAI-Beta). If nil, none: a
	// client cannot steer the operator's upstream account or switch its features.
	// Organization and Project set here win over a client's.
	ClientHeaders []string
	// Client sends the requests. If nil, a client over a Transport is used (HTTP/1.1 on
	// the calling goroutine); pass one over NewTransport for proxies or HTTP/2. Redirects
	// are never followed, whatever the client's CheckRedirect.
	Client *http.Client
}

// OpenAIHeaders are the client request headers an OpenAI-compatible upstream acts on,
// which a route may pass on (OpenAIConfig.ClientHeaders, AzureConfig.ClientHeaders).
var OpenAIHeaders = []string{"OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta"}

// OpenAI is the adapter for OpenAI and every upstream that speaks its chat completions
// API (vLLM, Ollama, Groq, …). Bodies pass through byte for byte.
type OpenAI struct {
	url    string
	header upstreamHeader
	client *http.Client
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI returns an OpenAI adapter.
func NewOpenAI(cfg OpenAIConfig) *OpenAI {
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = "https://api.openai.com/v1"
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if cfg.APIKey != "" {
		h.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	if cfg.Organization != "" {
		h.Set("OpenAI-Organization", cfg.Organization)
	}
	if cfg.Project != "" {
		h.Set("OpenAI-Project", cfg.Project)
	}
	return &OpenAI{url: base + "/chat/completions", header: newUpstreamHeader(h, cfg.ClientHeaders), client: clientOr(cfg.Client)}
}

// Chat implements Provider.
func (p *OpenAI) Chat(ctx context.Context, req *Request) (*Response, error) {
	return post(ctx, p.client, p.url, p.header, req)
}

// post sends an OpenAI-shaped request and sorts the answer into a Response or an
// *UpstreamError.
func post(ctx context.Context, client *http.Client, url string, header upstreamHeader, req *Request) (*Response, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req.Body))
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	hr.Header = header.For(req.Header)
	resp, err := do(client, hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("provider: read error body: %w", err)
		}
		return nil, &UpstreamError{StatusCode: resp.StatusCode, Header: resp.Header, Body: body}
	}
	return &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: resp.Body, ContentLength: resp.ContentLength}, nil
}
