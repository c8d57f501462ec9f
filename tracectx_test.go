package loom_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"

	"github.com/loom-gateway/loom"
)

// TestTraceContextPropagated: with a Propagator, the upstream gets Loom's span as the
// parent in its traceparent; the caller's trace continues when it sent a valid one, and a
// new trace starts when it sent none or garbage.
func TestTraceContextPropagated(t *testing.T) {
	const callerTrace, callerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	tests := []struct {
		name        string
		traceparent string
		wantTrace   string // "" : a new one
		wantParent  string
	}{
		{"caller's trace", "00-" + callerTrace + "-" + callerSpan + "-01", callerTrace, callerSpan},
		{"none", "", "", ""},
		{"garbage", "00-<script>\xff-" + strings.Repeat("z", 5000) + "-01", "", ""},
		{"all-zero trace id", "00-00000000000000000000000000000000-" + callerSpan + "-01", "", ""},
	}
	up := newFakeUpstream(t, http.StatusOK, fixture(t, "openai_chat_cached_tokens.json"))
	e := newEnv(t, []loom.Route{openAIRoute(up)}, func(c *loom.Config) { c.Propagator = propagation.TraceContext{} })
	tp := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+e.key)
			if tt.traceparent != "" {
				req.Header.Set("Traceparent", tt.traceparent)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			m := tp.FindStringSubmatch(up.lastCall(t).Header.Get("Traceparent"))
			if m == nil {
				t.Fatalf("upstream traceparent %q", up.lastCall(t).Header.Get("Traceparent"))
			}
			tr := e.traces(t, i+1)[i]
			type ids struct{ Trace, Span, Parent string }
			want := ids{tt.wantTrace, m[2], tt.wantParent}
			if want.Trace == "" {
				want.Trace = m[1]
				if m[1] == callerTrace {
					t.Error("a new trace reused the caller's trace id")
				}
			}
			if d := cmp.Diff(want, ids{tr.W3CTraceID, tr.W3CSpanID, tr.W3CParentSpanID}); d != "" {
				t.Errorf("trace ids (-want +got):\n%s", d)
			}
			if m[1] != want.Trace || m[2] == callerSpan {
				t.Errorf("upstream traceparent %q: want trace %s and Loom's own span", m[0], want.Trace)
			}
		})
	}
}
