package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loom-gateway/loom"
)

// Client-chosen strings in an access log line are bounded and stay valid JSON, whatever
// bytes they hold.
func TestAccessLogHostileStrings(t *testing.T) {
	var out bytes.Buffer
	a := &accessLog{log: newLogger(config{LogJSON: true}, &out)}
	a.warn = a.log
	model := "<b>\x00\xff" + strings.Repeat("m", 1<<20)
	h := a.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.note(r, loom.RequestInfo{Model: model, Provider: "openai", Status: 502})
		w.WriteHeader(http.StatusBadGateway)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/chat/completions", nil))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want the upstream failure and the access line:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		var got struct{ Model string }
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("not JSON (%v): %.200s", err, l)
		}
		if len(l) > 1024 || !strings.HasPrefix(got.Model, "<b>\x00\ufffd") {
			t.Errorf("model logged as %.300q (line %d bytes)", got.Model, len(l))
		}
	}
}
