package loom_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// An embedder's own provider kind, configured per tenant through Admin, serves that
// tenant's requests with the tenant's (unsealed) upstream key; kinds the gateway does not
// know are refused when the config is put.
func TestCustomProviderKind(t *testing.T) {
	var (
		mu    sync.Mutex
		built []string // base URL and key of each provider built
	)
	e := newEnv(t, nil, func(c *loom.Config) {
		c.ProviderKinds = map[string]loom.ProviderKind{
			"inhouse": func(pc tenancy.ProviderConfig, env loom.ProviderEnv) (provider.Provider, error) {
				if env.Client == nil {
					return nil, errors.New("no upstream client")
				}
				mu.Lock()
				built = append(built, pc.BaseURL+" "+env.APIKey)
				mu.Unlock()
				return provider.NewMock(provider.MockConfig{}), nil
			},
			"broken": func(tenancy.ProviderConfig, loom.ProviderEnv) (provider.Provider, error) {
				return nil, errors.New("inhouse cluster sk-do-not-show unreachable")
			},
			"mock": nil, // tenants may not configure the built-in mock here
		}
	})
	ctx := context.Background()
	put := func(name, kind, key string) error {
		return e.gw.Admin().PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: e.tenantID, Name: name, Kind: kind,
			BaseURL: "https://llm.internal.example", Models: []string{"house-1"}}, key)
	}
	if err := put("mine", "inhouse", "sk-inhouse-tenant-key"); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "mine/house-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.Choices[0].Message.Content, provider.MockReply("hello"); got != want {
		t.Errorf("answer %q, want the custom provider's %q", got, want)
	}
	mu.Lock()
	if len(built) != 1 || built[0] != "https://llm.internal.example sk-inhouse-tenant-key" {
		t.Errorf("custom kind built with %q, want the config's base URL and unsealed key once", built)
	}
	mu.Unlock()

	for _, kind := range []string{"bedrock", "mock", ""} {
		err := put("other", kind, "")
		if !errors.Is(err, tenancy.ErrInvalidInput) || !strings.Contains(err.Error(), "anthropic, azure, broken, inhouse, openai") {
			t.Errorf("kind %q: %v, want ErrInvalidInput listing the known kinds", kind, err)
		}
	}

	// A kind that fails to build refuses the tenant's requests, without telling the client why.
	if err := put("mine", "broken", "sk-inhouse-tenant-key"); err != nil {
		t.Fatal(err)
	}
	r := e.post(t, e.key, `{"model":"mine/house-1","messages":[{"role":"user","content":"hello"}]}`)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 500 || strings.Contains(string(body), "sk-") || strings.Contains(string(body), "inhouse") {
		t.Errorf("broken kind: %d %s; want 500 without the builder's error", r.StatusCode, body)
	}
}
