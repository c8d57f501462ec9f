package otelsink_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/loom-gateway/loom"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/otelsink"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// receiver is an in-process OTLP trace receiver: it keeps the spans it is sent, or refuses
// them while down.
type receiver struct {
	down  atomic.Bool
	mu    sync.Mutex
	spans []*tracepb.Span
	calls atomic.Int64 // export calls, refused ones included
}

func (r *receiver) take(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
}

func (r *receiver) got() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

// httpReceiver serves OTLP/HTTP (protobuf) on loopback and returns an exporter to it.
func httpReceiver(t *testing.T, r *receiver) sdktrace.SpanExporter {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		body, err := io.ReadAll(req.Body)
		if err != nil || req.URL.Path != "/v1/traces" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if r.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var er coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &er); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.take(&er)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

type grpcTraceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *receiver
}

func (s grpcTraceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.calls.Add(1)
	if s.r.down.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	s.r.take(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// grpcReceiver serves OTLP/gRPC on loopback and returns an exporter to it.
func grpcReceiver(t *testing.T, r *receiver) sdktrace.SpanExporter {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcTraceService{r: r})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(lis.Addr().String()), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

const (
	prompt     = "the secret prompt 7f3a"
	answerText = "the secret answer 9c1d"
	// The caller's own trace: W3C traceparent of a span in it.
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
)

// gateway is a Loom gateway over a real SQLite store with the OTel sink beside a memory
// sink, a spool, and a fake upstream that records the traceparent it is sent.
type gateway struct {
	url, key string
	gw       *loom.Gateway
	upstream chan http.Header
}

func newGateway(t *testing.T, exp sdktrace.SpanExporter, modify ...func(*otelsink.Config, *loomcrypto.Keyring)) *gateway {
	t.Helper()
	ctx := context.Background()
	g := &gateway{upstream: make(chan http.Header, 16)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.upstream <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"`+answerText+`"},"finish_reason":"stop"},`+
			`{"index":1,"message":{"role":"assistant","content":"cut"},"finish_reason":"length"}],`+
			`"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`)
	}))
	t.Cleanup(up.Close)
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "loom.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		t.Fatal(err)
	}
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	scfg := otelsink.Config{Exporter: exp, ServerAddresses: map[string]string{"openai": "api.openai.com"}}
	for _, m := range modify {
		m(&scfg, keyring)
	}
	sink, err := otelsink.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	g.gw, err = loom.New(loom.Config{
		Store:      tenancy.NewSQLiteStore(db),
		Keyring:    keyring,
		Routes:     []loom.Route{{Name: "openai", Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL + "/v1", APIKey: "sk-up"}), Models: []string{"gpt-4o"}}},
		Tracing:    tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewMemorySink(), sink}, SpoolDir: t.TempDir(), FlushInterval: 10 * time.Millisecond},
		Propagator: propagation.TraceContext{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := g.gw.Admin().CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	g.key, _, err = g.gw.Admin().CreateKey(ctx, ten.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.gw)
	g.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.gw.Shutdown(ctx)
	})
	return g
}

// chat sends one chat completion through the official SDK, as part of the caller's trace.
func (g *gateway) chat(t *testing.T) {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(g.url+"/v1"), option.WithAPIKey(g.key), option.WithMaxRetries(0),
		option.WithHeader("traceparent", "00-"+callerTraceID+"-"+callerSpanID+"-01"),
		option.WithHeader("tracestate", "vendor=abc"))
	resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "openai/gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != answerText {
		t.Fatalf("answer %q", resp.Choices[0].Message.Content)
	}
}

// wait polls, bounded, until cond holds.
func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	out := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = v.BoolValue
		case *commonpb.AnyValue_ArrayValue:
			var ss []string
			for _, e := range v.ArrayValue.GetValues() {
				s, ok := e.GetValue().(*commonpb.AnyValue_StringValue)
				if !ok {
					ss = append(ss, "not a string: "+e.String())
					continue
				}
				ss = append(ss, s.StringValue)
			}
			out[kv.GetKey()] = ss
		default:
			out[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return out
}

func TestSpansOverOTLP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exporter func(*testing.T, *receiver) sdktrace.SpanExporter
	}{
		{"http", httpReceiver},
		{"grpc", grpcReceiver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &receiver{}
			g := newGateway(t, tc.exporter(t, r))

			// The receiver is down for a while: the span waits in the pipeline and
			// arrives once it is back.
			r.down.Store(true)
			g.chat(t)
			wait(t, "a refused export", func() bool { return r.calls.Load() >= 2 })
			if n := len(r.got()); n != 0 {
				t.Fatalf("%d spans taken while down", n)
			}
			r.down.Store(false)
			wait(t, "the span", func() bool { return len(r.got()) >= 1 })

			spans := r.got()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			sp := spans[0]
			hdr := <-g.upstream
			a := attrs(sp.GetAttributes())
			for _, k := range []string{"loom.tenant.id", "loom.api_key.id", "loom.trace_id"} {
				if s, _ := a[k].(string); s == "" {
					t.Errorf("attribute %s empty", k)
				}
				delete(a, k)
			}
			for _, k := range []string{"loom.latency_us", "loom.ttfb_us", "loom.overhead_us", "loom.cost.micro_usd"} {
				if n, _ := a[k].(int64); n <= 0 {
					t.Errorf("attribute %s = %v, want > 0", k, a[k])
				}
				delete(a, k)
			}
			delete(a, "loom.price_version")
			want := map[string]any{
				"gen_ai.operation.name": "chat",
				"gen_ai.provider.name":  "openai",
				"gen_ai.request.model":  "openai/gpt-4o",
				"gen_ai.response.model": "gpt-4o-2024-08-06",
				// Two choices of the fake upstream's answer.
				"gen_ai.response.finish_reasons": []string{"stop", "length"},
				"gen_ai.usage.input_tokens":      int64(12), "gen_ai.usage.output_tokens": int64(5),
				"http.response.status_code": int64(200),
				"server.address":            "api.openai.com",
				"loom.stream":               false,
				"loom.usage.source":         "reported",
				"loom.usage.cached_tokens":  int64(0), "loom.usage.reasoning_tokens": int64(0),
			}
			if d := cmp.Diff(want, a); d != "" {
				t.Errorf("span attributes (-want +got):\n%s", d)
			}
			got := struct {
				Name, TraceID, ParentSpanID, TraceState, Upstream string
				Kind                                              tracepb.Span_SpanKind
			}{sp.GetName(), hex(sp.GetTraceId()), hex(sp.GetParentSpanId()), sp.GetTraceState(), hdr.Get("Traceparent"), sp.GetKind()}
			wantSpan := struct {
				Name, TraceID, ParentSpanID, TraceState, Upstream string
				Kind                                              tracepb.Span_SpanKind
			}{"chat openai/gpt-4o", callerTraceID, callerSpanID, "vendor=abc",
				"00-" + callerTraceID + "-" + hex(sp.GetSpanId()) + "-01", tracepb.Span_SPAN_KIND_CLIENT}
			if d := cmp.Diff(wantSpan, got); d != "" {
				t.Errorf("span and upstream traceparent (-want +got):\n%s", d)
			}
			if hdr.Get("Tracestate") != "vendor=abc" {
				t.Errorf("upstream tracestate %q", hdr.Get("Tracestate"))
			}
			// No body text in the span, by default.
			raw, _ := proto.Marshal(sp)
			for _, s := range []string{prompt, answerText} {
				if bytes.Contains(raw, []byte(s)) {
					t.Errorf("span carries body text %q", s)
				}
			}
			if len(sp.GetEvents()) != 0 {
				t.Errorf("span has events without content capture: %v", sp.GetEvents())
			}
		})
	}
}

// TestContentCapture: with content capture on, the messages and the answer are exported on
// the conventions' details event, opened from the sealed bodies.
func TestContentCapture(t *testing.T) {
	r := &receiver{}
	g := newGateway(t, httpReceiver(t, r), func(c *otelsink.Config, k *loomcrypto.Keyring) {
		c.CaptureContent, c.Open = true, k.Open
	})
	g.chat(t)
	<-g.upstream
	wait(t, "the span", func() bool { return len(r.got()) >= 1 })
	ev := r.got()[0].GetEvents()
	if len(ev) != 1 || ev[0].GetName() != "gen_ai.client.inference.operation.details" {
		t.Fatalf("events %v", ev)
	}
	a := attrs(ev[0].GetAttributes())
	in, _ := a["gen_ai.input.messages"].(string)
	out, _ := a["gen_ai.output.messages"].(string)
	if !strings.Contains(in, prompt) || !strings.HasPrefix(in, "[") || !strings.Contains(out, answerText) {
		t.Errorf("input %q, output %q: want the prompt's messages and the answer", in, out)
	}
}

func hex(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}
