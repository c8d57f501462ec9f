package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/loom-gateway/loom/tracing"
)

// model is one model the generated traffic asks for.
type model struct {
	name, provider string
	weight         float64
	// prices per million tokens in micro-dollars (in, out); 0: unpriced
	in, out int64
	latency float64 // median latency in milliseconds
}

var models = []model{
	{"gpt-4o-mini", "openai", 40, 150_000, 600_000, 700},
	{"gpt-4o", "openai", 15, 2_500_000, 10_000_000, 1500},
	{"o3-mini", "openai", 6, 1_100_000, 4_400_000, 6000},
	{"claude-sonnet-4", "anthropic", 14, 3_000_000, 15_000_000, 2000},
	{"claude-3-5-haiku", "anthropic", 10, 800_000, 4_000_000, 900},
	{"gpt-4o-mini", "azure", 8, 150_000, 600_000, 800},
	{"llama-3.3-70b", "together", 5, 0, 0, 1200},
	{"text-embedding-3-small", "openai", 2, 20_000, 0, 120},
}

// generator makes realistic traces: tenants of very different sizes, a few keys each, a
// skewed model mix, a few percent errors, log-normal latencies, and sealed bodies.
type generator struct {
	tenants  []string
	keys     [][]string
	keyCum   [][]float64 // key weights per tenant, cumulative: a few keys carry most traffic
	cum      []float64   // tenant weights, cumulative
	modelCum []float64
	from     time.Time
	span     time.Duration
	n        int64
	seal     tracing.Sealer
	words    []string
}

func newGenerator(seed uint64, tenants int, bigShare float64, from time.Time, span time.Duration, n int64, seal tracing.Sealer) *generator {
	g := &generator{from: from, span: span, n: n, seal: seal}
	r := rand.New(rand.NewPCG(seed, 1))
	total := 0.0
	for i := range tenants {
		g.tenants = append(g.tenants, fmt.Sprintf("ten_%016x", r.Uint64()))
		nkeys := 3 + r.IntN(6)
		w := (1 - bigShare) / float64(max(tenants-1, 1))
		if i == 0 {
			nkeys, w = 12, bigShare
		}
		var ks []string
		for range nkeys {
			ks = append(ks, fmt.Sprintf("key_%012x", r.Uint64()&0xffffffffffff))
		}
		g.keys = append(g.keys, ks)
		var kc []float64
		kt := 0.0
		for j := range ks {
			kt += 1 / float64(j+1)
			kc = append(kc, kt)
		}
		g.keyCum = append(g.keyCum, kc)
		total += w
		g.cum = append(g.cum, total)
	}
	total = 0
	for _, m := range models {
		total += m.weight
		g.modelCum = append(g.modelCum, total)
	}
	g.words = strings.Fields("the a of to and in is it you that he was for on are with as I his they be at one have this from " +
		"or had by hot word but what some we can out other were all there when up use your how said an each she which do " +
		"their time if will way about many then them write would like so these her long make thing see him two has look " +
		"more day could go come did number sound no most people my over know water than call first who may down side been")
	return g
}

func pick(r *rand.Rand, cum []float64) int {
	x := r.Float64() * cum[len(cum)-1]
	for i, c := range cum {
		if x < c {
			return i
		}
	}
	return len(cum) - 1
}

// trace makes the i-th of n traces: created_at spread evenly over the span (in order, as
// a gateway would write them), with a random part within the step.
func (g *generator) trace(r *rand.Rand, i int64) (*tracing.Trace, error) {
	step := float64(g.span) / float64(g.n)
	at := g.from.Add(time.Duration(float64(i)*step + r.Float64()*step)).Truncate(time.Microsecond)
	ti := pick(r, g.cum)
	m := models[pick(r, g.modelCum)]
	stream := m.out > 0 && r.IntN(2) == 0
	t := &tracing.Trace{
		ID: traceID(r, at), CreatedAt: at.UTC(), TenantID: g.tenants[ti], APIKeyID: g.keys[ti][pick(r, g.keyCum[ti])],
		Model: m.name, ServedModel: m.name + "-2025-01-01", Provider: m.provider, Stream: stream, Status: 200,
		UsageSource: tracing.UsageReported, PriceVersion: "2025-06", KeyVersion: 1,
	}
	if r.IntN(3) == 0 {
		t.RequestID = fmt.Sprintf("req_%x", r.Uint64())
	}
	switch x := r.IntN(1000); {
	case x < 20:
		t.Status, t.ErrorType = 429, "rate_limit_error"
	case x < 30:
		t.Status, t.ErrorType = 500, "api_error"
	case x < 35:
		t.Status, t.ErrorType = 400, "invalid_request_error"
	case x < 40:
		t.Status, t.ClientAborted = 499, true
	}
	lat := math.Exp(math.Log(m.latency*1000) + r.NormFloat64()*0.6)
	t.OverheadUS = int64(math.Exp(math.Log(400) + r.NormFloat64()*0.5))
	t.LatencyUS = int64(lat) + t.OverheadUS
	if t.Status == 200 || t.Status == 499 {
		t.PromptTokens = int64(math.Exp(math.Log(800) + r.NormFloat64()))
		if m.out > 0 {
			t.CompletionTokens = int64(math.Exp(math.Log(250) + r.NormFloat64()*0.8))
		}
		t.CachedTokens = t.PromptTokens / 4 * int64(r.IntN(2))
		if m.name == "o3-mini" {
			t.ReasoningTokens = t.CompletionTokens / 2
		}
		if stream {
			t.TTFBUS = int64(lat * (0.15 + 0.2*r.Float64()))
		} else {
			t.TTFBUS = int64(lat * 0.97)
		}
		if m.in > 0 {
			c := (t.PromptTokens*m.in + t.CompletionTokens*m.out) / 1_000_000
			t.CostMicroUSD = &c
		}
	} else {
		t.TTFBUS = int64(lat * 0.9)
		t.LatencyUS = t.TTFBUS + t.OverheadUS
		zero := int64(0)
		t.CostMicroUSD = &zero
	}
	req, resp := g.bodies(r, t)
	var err error
	if t.SealedRequest, t.KeyVersion, err = g.seal.Seal(t.TenantID, tracing.BodyRecordID(t.ID, tracing.BodyRequest), req); err != nil {
		return nil, err
	}
	if t.SealedResponse, _, err = g.seal.Seal(t.TenantID, tracing.BodyRecordID(t.ID, tracing.BodyResponse), resp); err != nil {
		return nil, err
	}
	return t, nil
}

func (g *generator) text(r *rand.Rand, words int) string {
	var b strings.Builder
	for i := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(g.words[r.IntN(len(g.words))])
	}
	return b.String()
}

// bodies are a chat request and its answer (an SSE stream for a stream), a few hundred
// bytes to a couple of kilobytes each.
func (g *generator) bodies(r *rand.Rand, t *tracing.Trace) (req, resp []byte) {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	req, _ = json.Marshal(map[string]any{"model": t.Model, "stream": t.Stream, "messages": []msg{
		{"system", "You are a helpful assistant. " + g.text(r, 5+r.IntN(15))},
		{"user", g.text(r, 10+r.IntN(60))},
	}})
	answer := g.text(r, 10+r.IntN(50))
	if t.Status >= 400 && t.Status != 499 {
		resp, _ = json.Marshal(map[string]any{"error": map[string]any{"message": "upstream said no", "type": t.ErrorType}})
		return req, resp
	}
	if !t.Stream {
		resp, _ = json.Marshal(map[string]any{"id": "chatcmpl-" + t.ID[:8], "object": "chat.completion", "model": t.ServedModel,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": msg{"assistant", answer}}},
			"usage":   map[string]any{"prompt_tokens": t.PromptTokens, "completion_tokens": t.CompletionTokens}})
		return req, resp
	}
	// The words need no JSON escaping: the chunks are formatted directly.
	var b strings.Builder
	for _, w := range strings.SplitAfter(answer, " ") {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":%q}}]}`+"\n\n", t.ID[:8], w)
		if b.Len() > 800 {
			break
		}
	}
	b.WriteString("data: [DONE]\n\n")
	return req, []byte(b.String())
}

// traceID is a UUIDv7 carrying at's millisecond, as the gateway's ids do.
func traceID(r *rand.Rand, at time.Time) string {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[8:], r.Uint64())
	binary.BigEndian.PutUint16(u[6:], uint16(r.Uint32()))
	ms := uint64(at.UnixMilli())
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u.String()
}

// masterKey is the fixed master key of generated data (a benchmark's, never a real one).
func masterKey(seed uint64) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "loom loadtraces master key %d", seed))
	return sum[:]
}
