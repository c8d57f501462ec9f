package tenancy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Sealer seals a tenant provider's upstream API key before it is stored. crypto.Keyring is
// one: Seal encrypts plaintext for the tenant, bound to recordID, and says which key
// version sealed it.
type Sealer interface {
	Seal(tenantID, recordID string, plaintext []byte) (sealed []byte, version int, err error)
}

// Opener opens what a Sealer sealed. crypto.Keyring is one.
type Opener interface {
	Open(tenantID, recordID string, version int, sealed []byte) ([]byte, error)
}

// providerKeyRecordID is the record id a provider config's upstream key is sealed under
// (with the tenant id): the key of one config cannot be passed off as another's.
func providerKeyRecordID(name string) string { return "provider:" + name }

// OpenAPIKey returns the config's upstream API key, opened with o; empty if it has none.
func (c ProviderConfig) OpenAPIKey(o Opener) (string, error) {
	if len(c.SealedAPIKey) == 0 {
		return "", nil
	}
	if o == nil {
		return "", errors.New("tenancy: a sealed provider API key needs a keyring to open it")
	}
	k, err := o.Open(c.TenantID, providerKeyRecordID(c.Name), c.KeyVersion, c.SealedAPIKey)
	if err != nil {
		return "", fmt.Errorf("tenancy: open provider API key: %w", err)
	}
	return string(k), nil
}

// ServiceOption configures a Service.
type ServiceOption func(*Service)

// WithSealer seals the upstream API keys PutProviderConfig is given. Without one, a
// provider config with an API key is refused.
func WithSealer(s Sealer) ServiceOption { return func(svc *Service) { svc.sealer = s } }

// WithProviderKinds lists the provider kinds a config may name; PutProviderConfig refuses
// others. Without it, any kind is stored (and a gateway that does not know it refuses the
// tenant's requests through it).
func WithProviderKinds(kinds ...string) ServiceOption {
	return func(svc *Service) { svc.kinds = slices.Sorted(slices.Values(kinds)) }
}

// WithProvidersChanged has fn called, with the tenant's id, after the tenant's provider
// configurations changed through the Service (the gateway drops the tenant's routes).
func WithProvidersChanged(fn func(tenantID string)) ServiceOption {
	return func(svc *Service) { svc.providersChanged = fn }
}

// WithTenantDeleted has fn called by DeleteTenant, with the tenant's id, as soon as the
// tenant's data keys are destroyed and again when its rows are gone: the place to drop the
// tenant from caches the Service does not own (crypto.Keyring.Forget). The change
// notification to other processes should call the same function.
func WithTenantDeleted(fn func(tenantID string)) ServiceOption {
	return func(svc *Service) { svc.tenantDeleted = fn }
}

// PutProviderConfig inserts or replaces the tenant's provider config of c.Name: the one way
// to write one. apiKey, the upstream key, is sealed with the Service's sealer (an empty one
// stores none, and whatever c.SealedAPIKey held is dropped), and its last four characters
// kept in KeyLast4 (none for a key under eight characters); UpdatedAt is stamped. The kind
// must be one the Service knows (WithProviderKinds). The tenant's routes are dropped from
// this process's cache at once, and from other replicas' when the store announces it
// (PostgreSQL; see Notifier). Bad input is ErrInvalidInput; a missing tenant ErrNotFound.
func (s *Service) PutProviderConfig(ctx context.Context, c ProviderConfig, apiKey string) error {
	if s.kinds != nil && !slices.Contains(s.kinds, c.Kind) {
		return fmt.Errorf("tenancy: put provider config: unknown provider kind %q (known: %s): %w",
			c.Kind, strings.Join(s.kinds, ", "), ErrInvalidInput)
	}
	c.SealedAPIKey, c.KeyVersion, c.KeyLast4 = nil, 0, ""
	if apiKey != "" {
		if err := checkText("provider API key", apiKey, maxAPIKeyLen); err != nil {
			return fmt.Errorf("tenancy: put provider config: %w", err)
		}
		if s.sealer == nil {
			return errors.New("tenancy: put provider config: an upstream API key needs a sealer (the gateway's Config.Keyring)")
		}
		if err := checkProviderConfig(c); err != nil { // before sealing under its name
			return fmt.Errorf("tenancy: put provider config: %w", err)
		}
		sealed, v, err := s.sealer.Seal(c.TenantID, providerKeyRecordID(c.Name), []byte(apiKey))
		if err != nil {
			return fmt.Errorf("tenancy: put provider config: seal API key: %w", err)
		}
		c.SealedAPIKey, c.KeyVersion, c.KeyLast4 = sealed, v, last4(apiKey)
	}
	c.UpdatedAt = s.now()
	if err := s.store.PutProviderConfig(ctx, c); err != nil {
		return err
	}
	s.changedProviders(c.TenantID)
	return nil
}

// DeleteProviderConfig removes the tenant's provider config of that name (ErrNotFound if
// none), dropping the tenant's routes like PutProviderConfig.
func (s *Service) DeleteProviderConfig(ctx context.Context, tenantID, name string) error {
	if err := s.store.DeleteProviderConfig(ctx, tenantID, name); err != nil {
		return err
	}
	s.changedProviders(tenantID)
	return nil
}

// ListProviderConfigs returns the tenant's provider configs by name.
func (s *Service) ListProviderConfigs(ctx context.Context, tenantID string) ([]ProviderConfig, error) {
	return s.store.ListProviderConfigs(ctx, tenantID)
}

func (s *Service) changedProviders(tenantID string) {
	if s.providersChanged != nil {
		s.providersChanged(tenantID)
	}
}

// last4 is the last four characters of key, or "" for a key under eight.
func last4(key string) string {
	n := utf8.RuneCountInString(key)
	if n < 8 {
		return ""
	}
	r := []rune(key)
	return string(r[n-4:])
}
