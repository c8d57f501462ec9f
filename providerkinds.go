package loom

import (
	"maps"
	"net/http"
	"slices"

	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// ProviderKind builds the provider a tenant's provider configuration names by its Kind
// (see Config.ProviderKinds). c is the stored configuration (its upstream key still
// sealed); env carries what the gateway supplies. It is called when the tenant's routes
// are read, not per request, and must not keep c.SealedAPIKey or env.APIKey anywhere but in
// the provider it returns. An error refuses the tenant's requests through that
// configuration (500), and is logged, never shown to the client.
type ProviderKind func(c tenancy.ProviderConfig, env ProviderEnv) (provider.Provider, error)

// ProviderEnv is what the gateway hands a ProviderKind.
type ProviderEnv struct {
	// APIKey is the configuration's upstream key, opened with Config.Keyring; empty if it
	// has none.
	APIKey string
	// Client is the gateway's upstream HTTP client for tenant providers (Loom's hardened
	// provider.Transport). Use it, or a client of your own.
	Client *http.Client
}

// builtinKinds are the provider kinds every gateway knows. A tenant's configuration is the
// tenant's own upstream account, so its clients may steer it with the headers its API
// knows.
func builtinKinds() map[string]ProviderKind {
	return map[string]ProviderKind{
		"openai": func(c tenancy.ProviderConfig, env ProviderEnv) (provider.Provider, error) {
			return provider.NewOpenAI(provider.OpenAIConfig{BaseURL: c.BaseURL, APIKey: env.APIKey, ClientHeaders: provider.OpenAIHeaders, Client: env.Client}), nil
		},
		"azure": func(c tenancy.ProviderConfig, env ProviderEnv) (provider.Provider, error) {
			return provider.NewAzure(provider.AzureConfig{Endpoint: c.BaseURL, APIKey: env.APIKey, APIVersion: c.APIVersion, ClientHeaders: provider.OpenAIHeaders, Client: env.Client}), nil
		},
		"anthropic": func(c tenancy.ProviderConfig, env ProviderEnv) (provider.Provider, error) {
			return provider.NewAnthropic(provider.AnthropicConfig{BaseURL: c.BaseURL, APIKey: env.APIKey, ClientHeaders: []string{"Anthropic-Beta"}, Client: env.Client}), nil
		},
		"mock": func(tenancy.ProviderConfig, ProviderEnv) (provider.Provider, error) {
			return provider.NewMock(provider.MockConfig{}), nil
		},
	}
}

// providerKinds is the built-in kinds with cfg's over them: a nil ProviderKind removes
// the built-in of its name.
func providerKinds(cfg map[string]ProviderKind) (map[string]ProviderKind, []string) {
	kinds := builtinKinds()
	for name, k := range cfg {
		if k == nil {
			delete(kinds, name)
		} else {
			kinds[name] = k
		}
	}
	return kinds, slices.Sorted(maps.Keys(kinds))
}
