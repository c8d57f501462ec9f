package loom_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tracing"
)

// TestTracesHostileText: one request whose model holds a NUL (and whose X-Request-Id is
// long invalid UTF-8) must not stop anyone's traces. PostgreSQL refuses NUL in text, and
// the sink used to retry that batch forever; now the pipeline stores a store-safe copy of
// every text field, marked fields_cut, and the next request's trace follows it.
func TestTracesHostileText(t *testing.T) {
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			up := newTraceUpstream(t)
			s := newSinkEnv(t, dialect, []loom.Route{{Name: "openai",
				Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL + "/v1", APIKey: "sk-upstream"}),
				Models:   []string{"gpt-4o"}}})
			ctx := context.Background()
			msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}

			var hr *http.Response
			_, err := s.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4o\x00x", Messages: msgs},
				option.WithHeader("X-Request-Id", "\xff"+strings.Repeat("r", 5000)), option.WithResponseInto(&hr))
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
				t.Fatalf("err = %v, want a 404 for the unknown model", err)
			}
			hostileID := hr.Header.Get("X-Request-Id")
			if _, err := s.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4o", Messages: msgs},
				option.WithResponseInto(&hr)); err != nil {
				t.Fatal(err)
			}
			normalID := hr.Header.Get("X-Request-Id")

			fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if err := s.gw.ForceFlush(fctx); err != nil {
				t.Fatalf("flush: %v (traces stalled: %+v)", err, s.gw.TraceStats())
			}
			type row struct {
				Model, RequestID string
				FieldsCut        bool
			}
			got := map[string]row{}
			rows, err := s.db.QueryContext(ctx, "SELECT CAST(id AS TEXT), model, request_id, fields_cut FROM traces")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				var r row
				if err := rows.Scan(&id, &r.Model, &r.RequestID, &r.FieldsCut); err != nil {
					t.Fatal(err)
				}
				got[id] = r
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			want := map[string]row{
				hostileID: {Model: "gpt-4o\uFFFDx", RequestID: "\uFFFD" + strings.Repeat("r", tracing.MaxRequestIDBytes-len("\uFFFD")), FieldsCut: true},
				normalID:  {Model: "gpt-4o"},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stored traces (-want +got):\n%s", diff)
			}
		})
	}
}
