package tenancy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recorder is a Listener that keeps what it was told.
type recorder struct {
	mu      sync.Mutex
	changes []Change
	resets  int
	errs    int
}

func (r *recorder) listener() Listener {
	return Listener{
		Changed: func(c Change) { r.mu.Lock(); r.changes = append(r.changes, c); r.mu.Unlock() },
		Reset:   func() { r.mu.Lock(); r.resets++; r.mu.Unlock() },
		Error:   func(error) { r.mu.Lock(); r.errs++; r.mu.Unlock() },
	}
}

// waitFor polls until cond holds under the recorder's lock, for at most 5s.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// take returns the changes received so far and forgets them.
func (r *recorder) take() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.changes
	r.changes = nil
	return c
}

func TestPostgresStoreListen(t *testing.T) {
	ctx := context.Background()
	s := newPostgresStore(t)
	r := &recorder{}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.Listen(lctx, r.listener()); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r.waitFor(t, "the first reset", func() bool { return r.resets == 1 })

	svc := NewService(s, nil)
	acme, err := svc.CreateTenant(ctx, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	_, k, err := svc.CreateKey(ctx, acme.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	// Last-used times are bookkeeping: not announced.
	if err := s.TouchKeys(ctx, time.Now(), k.ID); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
		want Change
	}{
		{"revoke", func() error { return svc.RevokeKey(ctx, acme.ID, k.ID) }, Change{What: ChangeKey, TenantID: acme.ID, KeyID: k.ID}},
		{"deactivate", func() error { return svc.SetTenantStatus(ctx, acme.ID, TenantInactive) }, Change{What: ChangeTenant, TenantID: acme.ID}},
		{"rename", func() error { return svc.RenameTenant(ctx, acme.ID, "Acme 2") }, Change{What: ChangeTenant, TenantID: acme.ID}},
		{"put provider", func() error {
			return svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "own", Kind: "mock"}, "")
		}, Change{What: ChangeProviders, TenantID: acme.ID}},
		{"delete provider", func() error { return svc.DeleteProviderConfig(ctx, acme.ID, "own") }, Change{What: ChangeProviders, TenantID: acme.ID}},
		{"written by another client", func() error {
			_, err := s.pool.Exec(ctx, `UPDATE tenants SET status = 'active' WHERE id = $1`, acme.ID)
			return err
		}, Change{What: ChangeTenant, TenantID: acme.ID}},
		{"truncate", func() error { _, err := s.pool.Exec(ctx, `TRUNCATE provider_configs`); return err }, Change{What: ChangeAll}},
	}
	r.waitFor(t, "the tenant and key creations", func() bool { return len(r.changes) == 1 })
	if diff := cmp.Diff([]Change{{What: ChangeKeyCreated}}, r.take()); diff != "" {
		t.Errorf("creating a tenant and a key, touching the key (-want +got):\n%s", diff)
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		r.waitFor(t, st.name, func() bool { return len(r.changes) > 0 })
		if diff := cmp.Diff([]Change{st.want}, r.take()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", st.name, diff)
		}
	}

	// Cut the listening connection: it comes back by itself, resets (changes made
	// meanwhile were missed), and announces again.
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, NotifyApplicationName).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d listening connections (%v), want 1", n, err)
	}
	r.waitFor(t, "the reset after reconnecting", func() bool { return r.resets == 2 && r.errs >= 1 })
	if err := svc.SetTenantStatus(ctx, acme.ID, TenantInactive); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "a change after reconnecting", func() bool { return len(r.changes) > 0 })
	if diff := cmp.Diff([]Change{{What: ChangeTenant, TenantID: acme.ID}}, r.take()); diff != "" {
		t.Errorf("after reconnecting (-want +got):\n%s", diff)
	}
}

// Apply drops exactly what a change makes wrong.
func TestAuthenticatorApply(t *testing.T) {
	ctx := context.Background()
	s := newSQLiteStore(t)
	svc := NewService(s, nil) // writes the Authenticator is not told about, as another process's
	a := NewAuthenticator(s, AuthOptions{TTL: time.Hour})
	acme, _ := svc.CreateTenant(ctx, "Acme")
	raw1, k1, _ := svc.CreateKey(ctx, acme.ID, "one")
	raw2, _, err := svc.CreateKey(ctx, acme.ID, "two")
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{raw1, raw2} {
		if _, err := a.Authenticate(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.RevokeKey(ctx, acme.ID, k1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, raw1); err != nil {
		t.Fatalf("before Apply the cached answer stands (TTL 1h): %v", err)
	}
	a.Apply(Change{What: ChangeKey, TenantID: acme.ID, KeyID: k1.ID})
	if _, err := a.Authenticate(ctx, raw1); err != ErrRevokedKey {
		t.Errorf("after Apply: %v, want ErrRevokedKey", err)
	}
	if err := svc.SetTenantStatus(ctx, acme.ID, TenantInactive); err != nil {
		t.Fatal(err)
	}
	a.Apply(Change{What: ChangeProviders, TenantID: acme.ID})
	if _, err := a.Authenticate(ctx, raw2); err != nil {
		t.Errorf("a provider change dropped a key: %v", err)
	}
	a.Apply(Change{What: ChangeTenant, TenantID: acme.ID})
	if _, err := a.Authenticate(ctx, raw2); err != ErrTenantInactive {
		t.Errorf("after the tenant change: %v, want ErrTenantInactive", err)
	}

	// A key used before it existed is remembered unknown, until a creation is announced.
	raw3, _, _, _ := GenerateKey()
	if _, err := a.Authenticate(ctx, raw3); err != ErrInvalidKey {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := svc.ImportKey(ctx, acme.ID, "late", raw3); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetTenantStatus(ctx, acme.ID, TenantActive); err != nil {
		t.Fatal(err)
	}
	a.Apply(Change{What: ChangeKeyCreated})
	if _, err := a.Authenticate(ctx, raw3); err != nil {
		t.Errorf("a key created after it was seen unknown: %v", err)
	}
}
