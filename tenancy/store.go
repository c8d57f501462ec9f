package tenancy

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds of what people name: tenants, keys, provider configs and their models.
const (
	// MaxNameLen is the longest name (of a tenant, a key, a provider config or a model),
	// in bytes.
	MaxNameLen = 200
	// MaxModels is how many models a provider config may list.
	MaxModels = 1000
	// maxURLLen and maxAPIKeyLen bound a provider config's base URL and upstream key.
	maxURLLen    = 2048
	maxAPIKeyLen = 4096
)

// checkText refuses what a name must not be: longer than max bytes, invalid UTF-8, or
// holding control characters (NUL, newlines: they break logs and headers).
func checkText(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s: longer than %d bytes: %w", what, max, ErrInvalidInput)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s: not valid UTF-8: %w", what, ErrInvalidInput)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%s: holds a control character: %w", what, ErrInvalidInput)
	}
	return nil
}

// checkName is checkText for a required name of at most MaxNameLen bytes.
func checkName(what, s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("%s: empty: %w", what, ErrInvalidInput)
	}
	return checkText(what, s, MaxNameLen)
}

// Checks both stores make before writing, so a bad argument is ErrInvalidInput rather than
// whatever the database's CHECK constraint says.

func checkTenant(t Tenant) error {
	if t.ID == "" {
		return fmt.Errorf("tenant: empty id: %w", ErrInvalidInput)
	}
	if err := checkName("tenant name", t.Name); err != nil {
		return err
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
	if err := checkName("key name", k.Name); err != nil {
		return err
	}
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

// checkProviderConfig refuses a config that could not route: a name that is not a model
// prefix (it may not hold "/"), a base URL that is not absolute http(s), models that are
// not names.
func checkProviderConfig(c ProviderConfig) error {
	if c.TenantID == "" {
		return fmt.Errorf("provider config: empty tenant id: %w", ErrInvalidInput)
	}
	if err := checkName("provider config name", c.Name); err != nil {
		return err
	}
	if strings.ContainsAny(c.Name, "/ ") {
		return fmt.Errorf("provider config name %q: holds a slash or a space: %w", c.Name, ErrInvalidInput)
	}
	if err := checkName("provider kind", c.Kind); err != nil {
		return err
	}
	if err := checkText("provider api version", c.APIVersion, MaxNameLen); err != nil {
		return err
	}
	if err := checkText("provider key last four", c.KeyLast4, 16); err != nil {
		return err
	}
	if c.BaseURL != "" {
		if err := checkText("provider base URL", c.BaseURL, maxURLLen); err != nil {
			return err
		}
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("provider base URL: want an absolute http or https URL: %w", ErrInvalidInput)
		}
	}
	if len(c.Models) > MaxModels {
		return fmt.Errorf("provider models: more than %d: %w", MaxModels, ErrInvalidInput)
	}
	for _, m := range c.Models {
		if err := checkName("provider model", m); err != nil {
			return err
		}
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
