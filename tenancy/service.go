package tenancy

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Service is the admin side of tenancy: it creates tenants and keys and changes their
// status on a Store, and purges its Authenticator's cache in the same call, so a revocation
// or deactivation is refused by this process from the next request on. It is safe for
// concurrent use.
type Service struct {
	store Store
	auth  *Authenticator
	now   func() time.Time
	// sealer seals provider API keys, kinds lists the provider kinds a config may name
	// (nil: any), providersChanged is told a tenant's configs changed, tenantDeleted that a
	// tenant was deleted; see ServiceOption.
	sealer           Sealer
	kinds            []string
	providersChanged func(tenantID string)
	tenantDeleted    func(tenantID string)
}

// NewService returns a Service over store, which must not be nil. auth is the Authenticator
// the process serves requests with; its cache is purged on every revocation and status
// change, and its clock (AuthOptions.Now) stamps created_at and revoked_at. If auth is nil
// (a process that serves no traffic, such as a CLI), no cache is purged and time.Now is
// used.
func NewService(store Store, auth *Authenticator, opts ...ServiceOption) *Service {
	s := &Service{store: store, auth: auth, now: time.Now}
	if auth != nil {
		s.now = auth.now
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// CreateTenant creates an active tenant with a new id. The name must be non-empty valid
// UTF-8 of at most MaxNameLen bytes without control characters (ErrInvalidInput).
func (s *Service) CreateTenant(ctx context.Context, name string) (Tenant, error) {
	if err := checkName("tenant name", name); err != nil {
		return Tenant{}, fmt.Errorf("tenancy: create tenant: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Tenant{}, fmt.Errorf("tenancy: create tenant: %w", err)
	}
	t := Tenant{ID: id.String(), Name: name, Status: TenantActive, CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateTenant(ctx, t); err != nil {
		return Tenant{}, err
	}
	return t, nil
}

// GetTenant returns the tenant, or ErrNotFound.
func (s *Service) GetTenant(ctx context.Context, id string) (Tenant, error) {
	return s.store.GetTenant(ctx, id)
}

// ListTenants returns every tenant, oldest first.
func (s *Service) ListTenants(ctx context.Context) ([]Tenant, error) {
	return s.store.ListTenants(ctx)
}

// ListTenantSummaries returns every tenant, oldest first, with how many keys it has, how
// many are active, and when one was last used.
func (s *Service) ListTenantSummaries(ctx context.Context) ([]TenantSummary, error) {
	return s.store.ListTenantSummaries(ctx)
}

// RenameTenant sets the tenant's name (ErrNotFound if there is no such tenant; the name is
// checked as in CreateTenant). Its keys' cached answers, which carry the name, are dropped.
func (s *Service) RenameTenant(ctx context.Context, id, name string) error {
	if err := s.store.RenameTenant(ctx, id, name); err != nil {
		return err
	}
	if s.auth != nil {
		s.auth.InvalidateTenant(id)
	}
	return nil
}

// SetTenantStatus activates or deactivates the tenant and drops its keys from the cache,
// so the change applies to the next request on this process.
func (s *Service) SetTenantStatus(ctx context.Context, id, status string) error {
	if err := s.store.SetTenantStatus(ctx, id, status); err != nil {
		return err
	}
	if s.auth != nil {
		s.auth.InvalidateTenant(id)
	}
	return nil
}

// CreateKey creates an active key for the tenant (ErrNotFound if there is no such tenant),
// named as a tenant is (ErrInvalidInput otherwise). raw is the key itself: it is returned here once and cannot be recovered later.
func (s *Service) CreateKey(ctx context.Context, tenantID, name string) (raw string, key APIKey, err error) {
	raw, _, _, err = GenerateKey()
	if err != nil {
		return "", APIKey{}, err
	}
	key, err = s.storeKey(ctx, tenantID, name, raw)
	if err != nil {
		return "", APIKey{}, err
	}
	return raw, key, nil
}

// MinImportedKeyLen is the shortest raw key ImportKey accepts.
const MinImportedKeyLen = 20

// ImportKey stores a raw key chosen by the operator (a bootstrap key from the environment,
// say) as an active key of the tenant. raw must start with KeyPrefix and be
// MinImportedKeyLen to 256 bytes long (ErrInvalidInput otherwise); how much randomness it
// holds is the operator's responsibility, which is why CreateKey is the normal way.
func (s *Service) ImportKey(ctx context.Context, tenantID, name, raw string) (APIKey, error) {
	if !plausibleKey(raw) || len(raw) < MinImportedKeyLen {
		return APIKey{}, fmt.Errorf("tenancy: import key: want %q and %d to %d bytes: %w",
			KeyPrefix, MinImportedKeyLen, maxKeyLen, ErrInvalidInput)
	}
	return s.storeKey(ctx, tenantID, name, raw)
}

func (s *Service) storeKey(ctx context.Context, tenantID, name, raw string) (APIKey, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return APIKey{}, fmt.Errorf("tenancy: create key: %w", err)
	}
	key := APIKey{
		ID:        id.String(),
		TenantID:  tenantID,
		Name:      name,
		Prefix:    raw[:min(DisplayPrefixLen, len(raw))],
		Hash:      HashKey(raw),
		Status:    KeyActive,
		CreatedAt: s.now().UTC().Truncate(time.Microsecond),
	}
	if err := s.store.CreateKey(ctx, key); err != nil {
		return APIKey{}, err
	}
	if s.auth != nil {
		// A stray request with this key before it existed must not keep it refused.
		s.auth.forgetUnknown(key.Hash)
	}
	return key, nil
}

// ListKeys returns the tenant's keys, oldest first.
func (s *Service) ListKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	return s.store.ListKeys(ctx, tenantID)
}

// RevokeKey revokes the tenant's key (ErrNotFound if the tenant has no such key) and drops
// it from the cache, so it is refused from the next request on this process. Revoking a
// revoked key changes nothing.
func (s *Service) RevokeKey(ctx context.Context, tenantID, keyID string) error {
	if err := s.store.RevokeKey(ctx, tenantID, keyID, s.now()); err != nil {
		return err
	}
	if s.auth != nil {
		s.auth.InvalidateKey(keyID)
	}
	return nil
}
