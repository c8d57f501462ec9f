package provider

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// AzureConfig configures an Azure OpenAI resource.
type AzureConfig struct {
	// Endpoint is the resource URL, e.g. https://my-resource.openai.azure.com. Required.
	Endpoint string
	// APIKey is sent in the api-key header.
	APIKey string
	// APIVersion selects the classic deployments path,
	// /openai/deployments/{deployment}/chat/completions?api-version=…, with the request's
	// model as the deployment. If empty, the v1 path /openai/v1/chat/completions is used
	// and the deployment travels as the body's model. Versions older than
	// 2024-09-01-preview and 2024-10-21 get no stream_options (they refuse it).
	APIVersion string
	// ClientHeaders lists the client request headers passed on, from OpenAIHeaders. If
	// nil, none.
	ClientHeaders []string
	// Client sends the requests. If nil, a client over a Transport is used. Redirects are
	// never followed.
	Client *http.Client
}

// Azure is the adapter for Azure OpenAI. Its answers are OpenAI's wire format with extra
// members (prompt_filter_results, content_filter_results) and extra stream chunks (a
// first chunk with empty choices, filter annotations after the finish); they pass through
// untouched, which the OpenAI SDKs accept.
type Azure struct {
	base, version string
	header        upstreamHeader
	client        *http.Client
}

var _ Provider = (*Azure)(nil)

// NewAzure returns an Azure OpenAI adapter.
func NewAzure(cfg AzureConfig) *Azure {
	h := http.Header{"Content-Type": {"application/json"}}
	if cfg.APIKey != "" {
		h.Set("api-key", cfg.APIKey)
	}
	return &Azure{
		base:    strings.TrimRight(cfg.Endpoint, "/"),
		version: cfg.APIVersion,
		header:  newUpstreamHeader(h, cfg.ClientHeaders),
		client:  clientOr(cfg.Client),
	}
}

// Chat implements Provider.
func (p *Azure) Chat(ctx context.Context, req *Request) (*Response, error) {
	u := p.base + "/openai/v1/chat/completions"
	if p.version != "" {
		u = p.base + "/openai/deployments/" + url.PathEscape(req.Model) +
			"/chat/completions?api-version=" + url.QueryEscape(p.version)
	}
	if !acceptsStreamOptions(p.version) {
		r := *req
		r.Body = withoutMember(req.Body, "stream_options")
		req = &r
	}
	return post(ctx, p.client, u, p.header, req)
}

// acceptsStreamOptions reports whether an api-version takes stream_options: previews from
// 2024-09-01-preview, GA versions from 2024-10-21, and the v1 path (no version) do; older
// versions refuse the whole request ("Unrecognized request argument supplied:
// stream_options"), so it is left out and the gateway estimates the stream's usage. A
// version that is not a date ("preview", "latest") is of the v1 era and takes it.
func acceptsStreamOptions(version string) bool {
	date, preview := strings.CutSuffix(strings.ToLower(version), "-preview")
	if !isDate(date) {
		return true
	}
	if preview {
		return date >= "2024-09-01"
	}
	return date >= "2024-10-21"
}

// isDate reports whether s has the form YYYY-MM-DD, which orders like the date it names.
func isDate(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i, c := range []byte(s) {
		if (i == 4 || i == 7) != (c == '-') || (c != '-' && (c < '0' || c > '9')) {
			return false
		}
	}
	return true
}
