package provider

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
)

// clientOr returns a copy of c (or a client over a Transport when c is nil) that never
// follows redirects: a redirect would carry the provider's credentials (api-key,
// x-api-key, which net/http keeps across hosts) and the request body to wherever the
// Location points.
func clientOr(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{Transport: &Transport{}}
	} else {
		cp := *c
		c = &cp
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// do sends hr. A redirect is answered as a 502 UpstreamError, never followed.
func do(client *http.Client, hr *http.Request) (*http.Response, error) {
	resp, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		msg := "The upstream provider answered " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode) +
			" (a redirect); Loom does not follow redirects of provider calls. Check the route's base URL."
		return nil, &UpstreamError{StatusCode: http.StatusBadGateway, Header: http.Header{}, Body: ErrorJSON(msg, "upstream_error", "", "upstream_redirect")}
	}
	return resp, nil
}

// upstreamHeader is an adapter's request header, shared by all its requests and never
// modified, with the client headers it may pass on.
type upstreamHeader struct {
	base   http.Header
	passed []string // canonical names
}

func newUpstreamHeader(base http.Header, passed []string) upstreamHeader {
	h := upstreamHeader{base: base}
	for _, k := range passed {
		h.passed = append(h.passed, textproto.CanonicalMIMEHeaderKey(k))
	}
	return h
}

// For returns the header for a request from a client that sent client: the shared one,
// copied only when a passed header is to be added. A header the adapter sets itself wins.
func (h upstreamHeader) For(client http.Header) http.Header {
	out, copied := h.base, false
	for _, k := range h.passed {
		if v := client.Get(k); v != "" && h.base.Get(k) == "" {
			if !copied {
				out, copied = h.base.Clone(), true
			}
			out.Set(k, v)
		}
	}
	return out
}
