package tenancy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/internal/ttlcache"
	"github.com/loom-gateway/loom/migrations"
)

// countingStore counts the lookups that reach the store.
type countingStore struct {
	Store
	lookups atomic.Int64
}

func (s *countingStore) LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error) {
	s.lookups.Add(1)
	return s.Store.LookupKey(ctx, hash)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// authFixture is a store with the tenants and keys the tests authenticate against.
type authFixture struct {
	store *countingStore
	clock *fakeClock
	auth  *Authenticator
	admin *Service

	acme, globex    Tenant
	acmeRaw, oldRaw string // an active key of acme, and one revoked
	globexRaw       string // a key of the inactive tenant
	acmeKey, oldKey APIKey
	globexKey       APIKey
	ttl, unknownTTL time.Duration
	ctx             context.Context
}

func newAuthFixture(t *testing.T, store Store) *authFixture {
	t.Helper()
	f := &authFixture{
		store:      &countingStore{Store: store},
		clock:      &fakeClock{t: at(0)},
		ttl:        30 * time.Second,
		unknownTTL: 5 * time.Second,
		ctx:        context.Background(),
	}
	f.auth = NewAuthenticator(f.store, AuthOptions{TTL: f.ttl, Now: f.clock.Now})
	f.admin = NewService(f.store, f.auth)
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f.acme, err = f.admin.CreateTenant(f.ctx, "Acme")
	must(err)
	f.globex, err = f.admin.CreateTenant(f.ctx, "Globex")
	must(err)
	f.acmeRaw, f.acmeKey, err = f.admin.CreateKey(f.ctx, f.acme.ID, "prod")
	must(err)
	f.oldRaw, f.oldKey, err = f.admin.CreateKey(f.ctx, f.acme.ID, "old")
	must(err)
	must(f.admin.RevokeKey(f.ctx, f.acme.ID, f.oldKey.ID))
	f.globexRaw, f.globexKey, err = f.admin.CreateKey(f.ctx, f.globex.ID, "prod")
	must(err)
	must(f.admin.SetTenantStatus(f.ctx, f.globex.ID, TenantInactive))
	return f
}

// check authenticates raw and compares the outcome with want.
func (f *authFixture) check(t *testing.T, raw string, want Principal, wantErr error) {
	t.Helper()
	got, err := f.auth.Authenticate(f.ctx, raw)
	if !errors.Is(err, wantErr) {
		t.Fatalf("Authenticate: error %v, want %v", err, wantErr)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Authenticate (-want +got):\n%s", diff)
	}
}

func (f *authFixture) lookups() int64 { return f.store.lookups.Load() }

func TestAuthenticate(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	unknownRaw, _, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		raw         string
		want        Principal
		wantErr     error
		wantLookups int64 // store lookups this call may cost
	}{
		{
			name:        "valid key",
			raw:         f.acmeRaw,
			want:        Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.acmeKey.ID},
			wantLookups: 1,
		},
		{
			name:        "revoked key",
			raw:         f.oldRaw,
			want:        Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.oldKey.ID},
			wantErr:     ErrRevokedKey,
			wantLookups: 1,
		},
		{
			name:        "inactive tenant",
			raw:         f.globexRaw,
			want:        Principal{TenantID: f.globex.ID, TenantName: "Globex", KeyID: f.globexKey.ID},
			wantErr:     ErrTenantInactive,
			wantLookups: 1,
		},
		{name: "unknown well-formed key", raw: unknownRaw, wantErr: ErrInvalidKey, wantLookups: 1},
		{name: "empty", raw: "", wantErr: ErrInvalidKey},
		{name: "prefix only", raw: "loom_", wantErr: ErrInvalidKey},
		{name: "another vendor's key", raw: "sk-proj-" + f.acmeRaw[5:], wantErr: ErrInvalidKey},
		{name: "prefix in the wrong case", raw: "LOOM_" + f.acmeRaw[5:], wantErr: ErrInvalidKey},
		{name: "absurdly long", raw: f.acmeRaw + strings.Repeat("x", 1<<20), wantErr: ErrInvalidKey},
		{name: "valid key with a character dropped", raw: f.acmeRaw[:len(f.acmeRaw)-1], wantErr: ErrInvalidKey, wantLookups: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.lookups()
			f.check(t, tt.raw, tt.want, tt.wantErr)
			if got := f.lookups() - before; got != tt.wantLookups {
				t.Errorf("store lookups = %d, want %d", got, tt.wantLookups)
			}
		})
	}
}

// Every outcome that came from the store is answered from the cache until it expires.
func TestAuthenticateCacheHitsSkipStore(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	unknownRaw, _, _, _ := GenerateKey()
	tests := []struct {
		name    string
		raw     string
		wantErr error
	}{
		{"valid key", f.acmeRaw, nil},
		{"revoked key flood", f.oldRaw, ErrRevokedKey},
		{"inactive tenant", f.globexRaw, ErrTenantInactive},
		{"unknown key", unknownRaw, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.lookups()
			for range 100 {
				if _, err := f.auth.Authenticate(f.ctx, tt.raw); !errors.Is(err, tt.wantErr) {
					t.Fatalf("Authenticate: error %v, want %v", err, tt.wantErr)
				}
			}
			if got := f.lookups() - before; got != 1 {
				t.Errorf("100 requests cost %d store lookups, want 1", got)
			}
		})
	}
}

// A revocation or deactivation through the Service applies to the very next request,
// however warm the cache.
func TestServiceInvalidatesCache(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	acme := Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.acmeKey.ID}
	f.check(t, f.acmeRaw, acme, nil) // warm

	if err := f.admin.SetTenantStatus(f.ctx, f.acme.ID, TenantInactive); err != nil {
		t.Fatal(err)
	}
	f.check(t, f.acmeRaw, acme, ErrTenantInactive)

	if err := f.admin.SetTenantStatus(f.ctx, f.acme.ID, TenantActive); err != nil {
		t.Fatal(err)
	}
	f.check(t, f.acmeRaw, acme, nil)

	if err := f.admin.RevokeKey(f.ctx, f.acme.ID, f.acmeKey.ID); err != nil {
		t.Fatal(err)
	}
	f.check(t, f.acmeRaw, acme, ErrRevokedKey)

	// The revoked outcome is cached in turn.
	before := f.lookups()
	f.check(t, f.acmeRaw, acme, ErrRevokedKey)
	if got := f.lookups() - before; got != 0 {
		t.Errorf("cached revocation cost %d lookups, want 0", got)
	}
}

// A change made behind the Authenticator's back (another replica) shows once the TTL has
// passed, and not before.
func TestAuthenticateTTL(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	acme := Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.acmeKey.ID}
	f.check(t, f.acmeRaw, acme, nil) // warm
	if err := f.store.RevokeKey(f.ctx, f.acme.ID, f.acmeKey.ID, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(f.ttl - time.Microsecond)
	f.check(t, f.acmeRaw, acme, nil)
	f.clock.Advance(time.Microsecond)
	f.check(t, f.acmeRaw, acme, ErrRevokedKey)
}

// An unknown key is remembered only briefly: a key that appears later (say, read first
// from a lagging replica) is accepted within seconds, not a whole TTL.
func TestAuthenticateUnknownTTL(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	raw, prefix, hash, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, raw, Principal{}, ErrInvalidKey)
	k := APIKey{ID: "late", TenantID: f.acme.ID, Name: "late", Prefix: prefix, Hash: hash, Status: KeyActive}
	if err := f.store.CreateKey(f.ctx, k); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(f.unknownTTL - time.Microsecond)
	f.check(t, raw, Principal{}, ErrInvalidKey)
	f.clock.Advance(time.Microsecond)
	f.check(t, raw, Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: "late"}, nil)
}

// blockingStore holds LookupKey, after reading the row, until released, so a test can
// change the store while a lookup is in flight.
type blockingStore struct {
	Store
	entered chan struct{} // receives once per lookup that has read its row
	release chan struct{} // closed to let lookups return
}

func (s *blockingStore) LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error) {
	k, t, err := s.Store.LookupKey(ctx, hash)
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return k, t, err
	case <-ctx.Done():
		return APIKey{}, Tenant{}, ctx.Err()
	}
}

// A lookup that read the key just before a revocation must not put its stale answer in the
// cache after the revocation purged it.
func TestRevocationDuringLookup(t *testing.T) {
	base := newSQLiteStore(t)
	f := newAuthFixture(t, base)
	bs := &blockingStore{Store: base, entered: make(chan struct{}, 1), release: make(chan struct{})}
	auth := NewAuthenticator(bs, AuthOptions{Now: f.clock.Now})
	admin := NewService(base, auth)

	done := make(chan error, 1)
	go func() {
		_, err := auth.Authenticate(f.ctx, f.acmeRaw)
		done <- err
	}()
	<-bs.entered // the lookup has read the key as active
	if err := admin.RevokeKey(f.ctx, f.acme.ID, f.acmeKey.ID); err != nil {
		t.Fatal(err)
	}
	close(bs.release)
	if err := <-done; err != nil {
		t.Fatalf("in-flight Authenticate: %v (it began before the revocation)", err)
	}
	if _, err := auth.Authenticate(f.ctx, f.acmeRaw); !errors.Is(err, ErrRevokedKey) {
		t.Errorf("Authenticate after revocation: error %v, want %v", err, ErrRevokedKey)
	}
}

// A request whose client went away stops waiting at once, and does not fail another
// request that shares its lookup.
func TestAuthenticateCanceled(t *testing.T) {
	base := newSQLiteStore(t)
	f := newAuthFixture(t, base)
	bs := &blockingStore{Store: base, entered: make(chan struct{}, 2), release: make(chan struct{})}
	auth := NewAuthenticator(bs, AuthOptions{Now: f.clock.Now})

	ctxA, cancelA := context.WithCancel(f.ctx)
	errA := make(chan error, 1)
	go func() {
		_, err := auth.Authenticate(ctxA, f.acmeRaw)
		errA <- err
	}()
	<-bs.entered
	errB := make(chan error, 1)
	go func() {
		_, err := auth.Authenticate(f.ctx, f.acmeRaw)
		errB <- err
	}()
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled Authenticate: error %v, want %v", err, context.Canceled)
	}
	close(bs.release)
	if err := <-errB; err != nil {
		t.Errorf("Authenticate sharing a canceled lookup: %v", err)
	}
}

func TestAuthenticateEviction(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	auth := NewAuthenticator(f.store, AuthOptions{Size: 1, Now: f.clock.Now})
	before := f.lookups()
	for _, raw := range []string{f.acmeRaw, f.globexRaw, f.acmeRaw} {
		auth.Authenticate(f.ctx, raw)
	}
	if got := f.lookups() - before; got != 3 {
		t.Errorf("store lookups with a one-entry cache = %d, want 3", got)
	}
}

// lookupStore answers LookupKey from memory, for benchmarks that must not measure a
// database.
type lookupStore struct {
	Store
	key    APIKey
	tenant Tenant
}

func (s *lookupStore) LookupKey(ctx context.Context, hash [32]byte) (APIKey, Tenant, error) {
	if hash != s.key.Hash {
		return APIKey{}, Tenant{}, ErrNotFound
	}
	return s.key, s.tenant, nil
}

func newBenchAuthenticator(b *testing.B) (*Authenticator, string) {
	raw, prefix, hash, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	s := &lookupStore{
		key:    APIKey{ID: "key", TenantID: "tenant", Prefix: prefix, Hash: hash, Status: KeyActive},
		tenant: Tenant{ID: "tenant", Name: "Tenant", Status: TenantActive},
	}
	auth := NewAuthenticator(s, AuthOptions{})
	if _, err := auth.Authenticate(context.Background(), raw); err != nil {
		b.Fatal(err)
	}
	return auth, raw
}

// BenchmarkAuthenticateCached is the per-request cost of authentication once the key is
// cached: the prefix check, a SHA-256, one LRU lookup.
func BenchmarkAuthenticateCached(b *testing.B) {
	auth, raw := newBenchAuthenticator(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := auth.Authenticate(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateCachedParallel(b *testing.B) {
	auth, raw := newBenchAuthenticator(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := auth.Authenticate(ctx, raw); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestImportKey(t *testing.T) {
	f := newAuthFixture(t, newSQLiteStore(t))
	tests := []struct {
		name    string
		raw     string
		wantErr error
	}{
		{name: "operator's key", raw: "loom_bootstrap-0123456789"},
		{name: "too short", raw: "loom_short", wantErr: ErrInvalidInput},
		{name: "wrong prefix", raw: "sk-bootstrap-0123456789", wantErr: ErrInvalidInput},
		{name: "too long", raw: "loom_" + strings.Repeat("x", 300), wantErr: ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Presented once before it exists: the refusal is cached, and must not outlive
			// the import.
			f.check(t, tt.raw, Principal{}, ErrInvalidKey)
			k, err := f.admin.ImportKey(f.ctx, f.acme.ID, "bootstrap", tt.raw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ImportKey: error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if k.Prefix != tt.raw[:DisplayPrefixLen] || k.Hash != HashKey(tt.raw) {
				t.Errorf("ImportKey stored prefix %q, hash %x for %q", k.Prefix, k.Hash, tt.raw)
			}
			f.check(t, tt.raw, Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: k.ID}, nil)
		})
	}
}

// newProxiedPostgresStore is a migrated PostgreSQL database reached through a proxy the
// test can cut, and a second store on the same database reached directly: another
// replica, which can still write while this one cannot reach the database.
func newProxiedPostgresStore(t *testing.T) (cut *PostgresStore, direct *PostgresStore, proxy *pgtest.Proxy) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.New(t)
	proxy = pgtest.NewProxy(t)
	pools := make([]*pgxpool.Pool, 2)
	for i, u := range []string{proxy.URL(t, url), url} {
		pool, err := pgxpool.New(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		pools[i] = pool
	}
	db := stdlib.OpenDBFromPool(pools[1])
	defer db.Close() // does not close the pool
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		t.Fatal(err)
	}
	return NewPostgresStore(pools[0]), NewPostgresStore(pools[1]), proxy
}

// Through a store outage of several TTLs, keys this process has read keep being answered
// as they were read (accepted or refused), and with the key set even keys never used
// before; a key the store never answered for is an error, not a refusal. A revocation
// made on another replica during the outage takes effect within min(TTL, 5s) of the store
// returning.
func TestAuthenticateThroughOutage(t *testing.T) {
	for _, tt := range []struct {
		name           string
		keySet         bool
		wantUncachedOK bool
	}{
		{name: "cache only", keySet: false, wantUncachedOK: false},
		{name: "with the key set", keySet: true, wantUncachedOK: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, direct, proxy := newProxiedPostgresStore(t)
			f := newAuthFixture(t, store)
			auth := NewAuthenticator(store, AuthOptions{TTL: f.ttl, StaleFor: 10 * time.Minute, Now: f.clock.Now})
			other := NewService(direct, nil) // another replica's admin
			uncachedRaw, uncached, err := f.admin.CreateKey(f.ctx, f.acme.ID, "never used")
			if err != nil {
				t.Fatal(err)
			}
			if tt.keySet {
				if err := auth.RefreshKeySet(f.ctx, store); err != nil {
					t.Fatal(err)
				}
			}
			acme := Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.acmeKey.ID}
			old := Principal{TenantID: f.acme.ID, TenantName: "Acme", KeyID: f.oldKey.ID}
			check := func(raw string, want Principal, wantErr error) {
				t.Helper()
				got, err := auth.Authenticate(f.ctx, raw)
				if !errors.Is(err, wantErr) {
					t.Fatalf("at %v: Authenticate: error %v, want %v", f.clock.Now().Sub(at(0)), err, wantErr)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Authenticate (-want +got):\n%s", diff)
				}
			}
			check(f.acmeRaw, acme, nil) // read before the outage
			check(f.oldRaw, old, ErrRevokedKey)

			proxy.Cut()
			var stale int64
			for range 4 * f.ttl / (5 * time.Second) {
				f.clock.Advance(5 * time.Second)
				check(f.acmeRaw, acme, nil)
				check(f.oldRaw, old, ErrRevokedKey)
				if f.clock.Now().Sub(at(0)) >= f.ttl { // before that, answered fresh
					stale += 2
				}
				got, err := auth.Authenticate(f.ctx, uncachedRaw)
				if tt.wantUncachedOK {
					if err != nil {
						t.Fatalf("key from the key set: %v", err)
					}
					if got.KeyID != uncached.ID {
						t.Errorf("key from the key set: key %q, want %q", got.KeyID, uncached.ID)
					}
					stale++
				} else if err == nil || errors.Is(err, ErrInvalidKey) {
					t.Fatalf("key never read, store down: error %v, want the store's error", err)
				}
			}
			if got := auth.Stats().ServedStale; got != stale {
				t.Errorf("ServedStale = %d, want %d", got, stale)
			}

			if err := other.RevokeKey(f.ctx, f.acme.ID, f.acmeKey.ID); err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(time.Second)
			check(f.acmeRaw, acme, nil) // cannot know yet: the store is unreachable
			proxy.Restore()
			f.clock.Advance(ttlcache.MaxRetry)
			check(f.acmeRaw, acme, ErrRevokedKey)
		})
	}
}

// The stale window ends: TTL + StaleFor after the store last answered, a key is an error.
func TestAuthenticateStaleWindowEnds(t *testing.T) {
	store, _, proxy := newProxiedPostgresStore(t)
	f := newAuthFixture(t, store)
	staleFor := 10 * time.Minute
	auth := NewAuthenticator(store, AuthOptions{TTL: f.ttl, StaleFor: staleFor, Now: f.clock.Now})
	if _, err := auth.Authenticate(f.ctx, f.acmeRaw); err != nil {
		t.Fatal(err)
	}
	if got, want := auth.Stats().StaleUntil, at(0).Add(f.ttl+staleFor); !got.Equal(want) {
		t.Errorf("StaleUntil = %v, want %v", got, want)
	}
	proxy.Cut()
	f.clock.Advance(f.ttl + staleFor - time.Microsecond)
	if _, err := auth.Authenticate(f.ctx, f.acmeRaw); err != nil {
		t.Fatalf("just inside the window: %v", err)
	}
	f.clock.Advance(ttlcache.MaxRetry)
	if _, err := auth.Authenticate(f.ctx, f.acmeRaw); err == nil || errors.Is(err, ErrInvalidKey) {
		t.Fatalf("past the window: error %v, want the store's error", err)
	}
}

// A key revoked through this process's Service is dropped from the key set too, so a
// later outage cannot bring it back.
func TestRevokedKeyLeavesKeySet(t *testing.T) {
	store, _, proxy := newProxiedPostgresStore(t)
	f := newAuthFixture(t, store)
	raw, k, err := f.admin.CreateKey(f.ctx, f.acme.ID, "set")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.auth.RefreshKeySet(f.ctx, store); err != nil {
		t.Fatal(err)
	}
	if got := f.auth.Stats().KeySetKeys; got != 2 { // acme's prod key and this one
		t.Errorf("KeySetKeys = %d, want 2", got)
	}
	if err := f.admin.RevokeKey(f.ctx, f.acme.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	if _, err := f.auth.Authenticate(f.ctx, raw); err == nil {
		t.Fatal("revoked key accepted from the key set during an outage")
	}
}
