package tracing

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestSpoolDecodesVersion1 replays a record as a build before the usage in full wrote it:
// version 1, the usage fields absent.
func TestSpoolDecodesVersion1(t *testing.T) {
	cost := int64(7)
	tr := &Trace{ID: "t1", CreatedAt: time.Unix(1700000000, 0).UTC(), PromptTokens: 10, CompletionTokens: 2,
		UsageSource: UsageReported, CostMicroUSD: &cost, SealedRequest: []byte("sealed")}
	v2 := appendTrace(nil, 5, tr)
	full := *tr
	full.CacheWrite5mTokens, full.CacheWrite1hTokens, full.ServiceTier, full.UsageMethod = 3, 4, "flex", "tiktoken/o200k_base"
	if diff := cmp.Diff(len(v2)+len("flex")+len("tiktoken/o200k_base"), len(appendTrace(nil, 5, &full))); diff != "" {
		t.Fatalf("the usage fields do not follow the version-1 fields (-want +got):\n%s", diff)
	}
	// A version-1 record is the version-2 one without its last 8 bytes (six zero varints
	// and two empty strings).
	v1 := append([]byte{traceFormatV1}, v2[1:len(v2)-8]...)
	got, err := decodeTrace(v1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tr, got); diff != "" {
		t.Errorf("version-1 record (-want +got):\n%s", diff)
	}
	back, err := decodeTrace(appendTrace(nil, 5, &full))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&full, back); diff != "" {
		t.Errorf("version-2 round trip (-want +got):\n%s", diff)
	}
}
