package tenancy

import (
	"context"
	"errors"
	"time"
)

// Status values of tenants and keys.
const (
	TenantActive   = "active"
	TenantInactive = "inactive"
	KeyActive      = "active"
	KeyRevoked     = "revoked"
)

// Errors returned by stores and the Authenticator. The gateway maps them to HTTP statuses.
var (
	ErrNotFound       = errors.New("tenancy: not found")
	ErrInvalidKey     = errors.New("tenancy: invalid API key")
	ErrRevokedKey     = errors.New("tenancy: API key revoked")
	ErrTenantInactive = errors.New("tenancy: tenant inactive")
	// ErrConflict is returned (possibly wrapped) when a row would duplicate an existing one:
	// a tenant or key id, or a key hash.
	ErrConflict = errors.New("tenancy: already exists")
	// ErrInvalidInput is returned (wrapped, with the reason) for an argument a store or the
	// Service refuses before touching the database, such as an unknown status.
	ErrInvalidInput = errors.New("tenancy: invalid input")
)

// Tenant is one isolated customer of the gateway.
type Tenant struct {
	ID        string
	Name      string
	Status    string // TenantActive or TenantInactive
	CreatedAt time.Time
}

// APIKey is a tenant's key. The raw key is never stored: only its SHA-256 hash, and a short
// display prefix so people can tell their keys apart.
type APIKey struct {
	ID        string
	TenantID  string
	Name      string
	Prefix    string   // the first characters of the raw key, for display
	Hash      [32]byte // SHA-256 of the raw key
	Status    string   // KeyActive or KeyRevoked
	CreatedAt time.Time
	RevokedAt *time.Time
	// LastUsedAt is when the key was last seen, as recorded by the stores' TouchKeys; nil if
	// never recorded.
	LastUsedAt *time.Time
}

// ProviderConfig is a tenant's own configuration of an upstream provider; it overrides the
// gateway-wide provider of the same Name for that tenant.
type ProviderConfig struct {
	TenantID string
	Name     string // routing prefix, e.g. "openai" for "openai/gpt-4o-mini"
	Kind     string // adapter: "openai", "azure", "anthropic" or "mock"
	BaseURL  string
	// SealedAPIKey is the upstream API key, sealed by the caller (see package crypto); the
	// store keeps it as opaque bytes.
	SealedAPIKey []byte
	KeyVersion   int
	// KeyLast4 is the last four characters of the upstream API key, for display (empty
	// without a key, or for a key under eight characters, which four would half reveal).
	KeyLast4   string
	APIVersion string   // Azure api-version; empty for the /openai/v1/ path
	Models     []string // models this tenant may use through this provider; empty: any
	UpdatedAt  time.Time
}

// TenantSummary is a tenant with what an operator scans a list of tenants for.
type TenantSummary struct {
	Tenant
	Keys       int // every key, revoked ones included
	ActiveKeys int
	// LastUsedAt is the latest LastUsedAt of the tenant's keys; nil if none was recorded.
	LastUsedAt *time.Time
}

// Principal is who a request is from: the result of authenticating an API key.
// Authenticator.Authenticate also fills it in alongside ErrRevokedKey and ErrTenantInactive, so
// the caller can log which key was refused.
type Principal struct {
	TenantID   string
	TenantName string
	KeyID      string
}

// Store persists tenants, API keys and provider configurations. Implementations must be
// safe for concurrent use. Methods return ErrNotFound (possibly wrapped) for a missing row,
// including the missing tenant of a key or provider config being written, and ErrConflict
// (possibly wrapped) for a duplicate id or key hash. Times are kept at microsecond precision
// and returned in UTC. A Store holds no cache: callers that need one (the Authenticator) keep
// their own, and admin writes should go through Service so that cache is purged.
//
// A Store may also be a KeyToucher and a Snapshotter (both built-in stores are): the
// gateway then records when keys were last used, and can hold the whole key set for an
// outage.
type Store interface {
	CreateTenant(ctx context.Context, t Tenant) error
	GetTenant(ctx context.Context, id string) (Tenant, error)
	ListTenants(ctx context.Context) ([]Tenant, error)
	SetTenantStatus(ctx context.Context, id, status string) error
	// RenameTenant sets the tenant's name.
	RenameTenant(ctx context.Context, id, name string) error
	// ListTenantSummaries returns every tenant, oldest first, with counts of its keys.
	ListTenantSummaries(ctx context.Context) ([]TenantSummary, error)

	CreateKey(ctx context.Context, k APIKey) error
	ListKeys(ctx context.Context, tenantID string) ([]APIKey, error)
	// RevokeKey marks the key revoked at the given time; revoking a revoked key is a no-op.
	RevokeKey(ctx context.Context, tenantID, keyID string, at time.Time) error
	// LookupKey finds a key by its hash, with its tenant, whatever their statuses: judging
	// them is the Authenticator's job.
	LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error)

	// PutProviderConfig inserts or replaces the tenant's config of that Name, as given:
	// the store seals nothing. Write configs through Service.PutProviderConfig, which
	// seals the upstream key and purges the gateway's routes.
	PutProviderConfig(ctx context.Context, c ProviderConfig) error
	ListProviderConfigs(ctx context.Context, tenantID string) ([]ProviderConfig, error)
	// DeleteProviderConfig removes the tenant's config of that name (ErrNotFound if none).
	DeleteProviderConfig(ctx context.Context, tenantID, name string) error

	// Close releases what the store itself holds. It does not close the database handle or
	// pool the store was built on: whoever opened it closes it.
	Close() error
}

// KeyToucher is the optional part of a Store that records when keys were last used. It is
// not in Store because last-used times are bookkeeping the gateway batches off the request
// path (Authenticator.FlushUsage), never something authentication waits on; a Store
// without it still authenticates, and LastUsedAt stays nil.
type KeyToucher interface {
	// TouchKeys records that the keys were used at the given time; a later time already
	// recorded is kept, and ids of keys that do not exist are ignored.
	TouchKeys(ctx context.Context, at time.Time, keyIDs ...string) error
}

// Snapshotter is the optional part of a Store that reads, in one call each, what the data
// plane needs to keep answering through a store outage: every active key and every
// tenant provider configuration (see Authenticator.RefreshKeySet and the gateway's
// Config.KeySetRefresh).
type Snapshotter interface {
	// ListActiveKeys returns every active key of an active tenant, with its tenant.
	ListActiveKeys(ctx context.Context) ([]ActiveKey, error)
	// ListAllProviderConfigs returns every tenant's provider configurations, by tenant
	// and name.
	ListAllProviderConfigs(ctx context.Context) ([]ProviderConfig, error)
}

// ActiveKey is a key and its tenant, as Snapshotter.ListActiveKeys returns them.
type ActiveKey struct {
	Key    APIKey
	Tenant Tenant
}
