package tenancy

import (
	"fmt"
	"time"
)

// Checks both stores make before writing, so a bad argument is ErrInvalidInput rather than
// whatever the database's CHECK constraint says.

func checkTenant(t Tenant) error {
	if t.ID == "" {
		return fmt.Errorf("tenant: empty id: %w", ErrInvalidInput)
	}
	return checkTenantStatus(t.Status)
}

func checkTenantStatus(status string) error {
	if status != TenantActive && status != TenantInactive {
		return fmt.Errorf("tenant status %q: %w", status, ErrInvalidInput)
	}
	return nil
}

func checkKey(k APIKey) error {
	switch {
	case k.ID == "" || k.TenantID == "":
		return fmt.Errorf("key: empty id or tenant id: %w", ErrInvalidInput)
	case k.Status == KeyActive && k.RevokedAt != nil:
		return fmt.Errorf("key: active with revoked_at: %w", ErrInvalidInput)
	case k.Status == KeyRevoked && k.RevokedAt == nil:
		return fmt.Errorf("key: revoked without revoked_at: %w", ErrInvalidInput)
	case k.Status != KeyActive && k.Status != KeyRevoked:
		return fmt.Errorf("key status %q: %w", k.Status, ErrInvalidInput)
	}
	return nil
}

func checkProviderConfig(c ProviderConfig) error {
	if c.TenantID == "" || c.Name == "" || c.Kind == "" {
		return fmt.Errorf("provider config: empty tenant id, name or kind: %w", ErrInvalidInput)
	}
	return nil
}

// stamp is t at the precision both stores keep (PostgreSQL's microseconds) in UTC, or now
// if t is zero.
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// emptyNil makes an empty slice nil, so configs read back compare equal to what was written
// whichever way "none" was spelled.
func emptyNil[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}
