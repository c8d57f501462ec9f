package tenancy

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// Defaults of AuthOptions.
const (
	DefaultAuthCacheSize = 10000
	DefaultAuthCacheTTL  = 30 * time.Second
	// maxUnknownTTL caps how long an unknown key is remembered as unknown, so a key read
	// too early (from a lagging read replica, say) is not refused for a whole TTL.
	maxUnknownTTL = 5 * time.Second
)

// AuthOptions configures an Authenticator. The zero value is ready to use.
type AuthOptions struct {
	// Size is how many keys the cache holds, least recently used evicted first.
	// If zero or negative, DefaultAuthCacheSize (10000) is used.
	Size int
	// TTL is how long an answer is cached. It bounds how long a revocation or tenant
	// deactivation made on another replica takes to reach this one (on this replica,
	// Service purges the cache at once). If zero or negative, DefaultAuthCacheTTL (30s) is used.
	TTL time.Duration
	// Now is the clock used for cache expiry and, in Service, for timestamps.
	// If nil, time.Now is used.
	Now func() time.Time
}

// authEntry is one cached answer: an authenticated principal, or a refusal (ErrRevokedKey,
// ErrTenantInactive) that still names its tenant and key so invalidation can find it.
type authEntry struct {
	p       Principal
	err     error
	expires time.Time
	use     *keyUse // nil for refusals
}

// keyUse tracks when an accepted key was last used (unix nanoseconds), and up to when that
// was written to the store, without a lock or an allocation on the request path.
type keyUse struct {
	last, flushed atomic.Int64
}

// Authenticator turns raw API keys into Principals, caching answers in memory. It is safe for
// concurrent use. It starts no goroutines and needs no shutdown.
//
// Known keys (valid, revoked, or of an inactive tenant) are cached for TTL in an LRU of Size
// entries, so a flood of requests with a revoked key does not reach the store. Unknown keys
// are cached in a separate LRU of Size/10 entries for at most 5s: a client stuck on a
// deleted key costs one lookup per 5s, and a flood of random keys, which no cache can
// absorb, cannot evict the known keys. Concurrent misses for the same key share one
// lookup.
type Authenticator struct {
	store      Store
	ttl        time.Duration
	unknownTTL time.Duration
	now        func() time.Time
	flights    singleflight.Group

	mu sync.Mutex // guards everything below
	// gen counts invalidations. A lookup that began before an invalidation does not fill
	// the cache, so an answer read just before a revocation cannot outlive it.
	gen     uint64
	known   *simplelru.LRU[[32]byte, authEntry]
	unknown *simplelru.LRU[[32]byte, time.Time] // value: expiry
}

// NewAuthenticator returns an Authenticator over store, which must not be nil. Admin writes
// must go through a Service built with it (or call its Invalidate methods) for revocations
// to take effect at once.
func NewAuthenticator(store Store, opts AuthOptions) *Authenticator {
	if opts.Size <= 0 {
		opts.Size = DefaultAuthCacheSize
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultAuthCacheTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// NewLRU fails only for a size below 1, excluded above.
	known, _ := simplelru.NewLRU[[32]byte, authEntry](opts.Size, nil)
	unknown, _ := simplelru.NewLRU[[32]byte, time.Time](max(opts.Size/10, 1), nil)
	return &Authenticator{
		store:      store,
		ttl:        opts.TTL,
		unknownTTL: min(opts.TTL, maxUnknownTTL),
		now:        opts.Now,
		known:      known,
		unknown:    unknown,
	}
}

// Authenticate returns who rawKey belongs to. Refusals are ErrInvalidKey (malformed or
// unknown key), ErrRevokedKey and ErrTenantInactive; with the last two the Principal still
// names the key and tenant, for logging. Any other error is the store's, wrapped, or the
// context's: the key was neither accepted nor refused.
//
// rawKey is the bearer token as sent, without "Bearer ". A key without the "loom_" prefix, or
// longer than 256 bytes, is refused without hashing or a lookup.
func (a *Authenticator) Authenticate(ctx context.Context, rawKey string) (Principal, error) {
	if !plausibleKey(rawKey) {
		return Principal{}, ErrInvalidKey
	}
	h := HashKey(rawKey)
	now := a.now()
	a.mu.Lock()
	if e, ok := a.known.Get(h); ok {
		if now.Before(e.expires) {
			a.mu.Unlock()
			if e.use != nil {
				e.use.last.Store(now.UnixNano())
			}
			return e.p, e.err
		}
		a.known.Remove(h)
	} else if exp, ok := a.unknown.Get(h); ok {
		if now.Before(exp) {
			a.mu.Unlock()
			return Principal{}, ErrInvalidKey
		}
		a.unknown.Remove(h)
	}
	gen := a.gen
	a.mu.Unlock()
	return a.lookup(ctx, h, gen)
}

// lookup asks the store, sharing the call with concurrent misses for the same key that saw
// the same generation. A caller arriving after an invalidation gets a fresh lookup rather
// than joining one that started before it.
func (a *Authenticator) lookup(ctx context.Context, h [32]byte, gen uint64) (Principal, error) {
	var fk [40]byte
	copy(fk[:], h[:])
	binary.LittleEndian.PutUint64(fk[32:], gen)
	ch := a.flights.DoChan(string(fk[:]), func() (any, error) {
		return a.fetch(ctx, h, gen)
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return Principal{}, fmt.Errorf("tenancy: authenticate: %w", context.Cause(ctx))
	}
	if r.Err != nil && ctx.Err() == nil &&
		(errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
		// The caller whose context ran the shared lookup went away; ours has not.
		e, err := a.fetch(ctx, h, gen)
		r = singleflight.Result{Val: e, Err: err}
	}
	if r.Err != nil {
		return Principal{}, r.Err
	}
	e := r.Val.(authEntry)
	return e.p, e.err
}

// fetch looks the hash up in the store, judges the answer and caches it unless an
// invalidation happened since gen was read.
func (a *Authenticator) fetch(ctx context.Context, h [32]byte, gen uint64) (authEntry, error) {
	k, t, err := a.store.LookupKey(ctx, h)
	if errors.Is(err, ErrNotFound) {
		a.mu.Lock()
		a.unknown.Add(h, a.now().Add(a.unknownTTL))
		a.mu.Unlock()
		return authEntry{err: ErrInvalidKey}, nil
	}
	if err != nil {
		return authEntry{}, fmt.Errorf("tenancy: authenticate: %w", err)
	}
	// The store found the row by this hash; checking it again, in constant time, guards
	// against a store that matches loosely (a prefix, a collation) handing out another key.
	if subtle.ConstantTimeCompare(k.Hash[:], h[:]) != 1 || k.TenantID != t.ID {
		return authEntry{err: ErrInvalidKey}, nil
	}
	e := authEntry{
		p:       Principal{TenantID: t.ID, TenantName: t.Name, KeyID: k.ID},
		expires: a.now().Add(a.ttl),
	}
	switch {
	case k.Status != KeyActive:
		e.err = ErrRevokedKey
	case t.Status != TenantActive:
		e.err = ErrTenantInactive
	default:
		e.use = &keyUse{}
		e.use.last.Store(a.now().UnixNano())
	}
	a.mu.Lock()
	if a.gen == gen {
		a.known.Add(h, e)
	}
	a.mu.Unlock()
	return e, nil
}

// FlushUsage writes when cached keys were last used with touch (a store's TouchKeys), for
// every key used since the last flush, stamped with the current time: last-used times are
// exact to within the flush interval, and a key evicted from the cache before a flush is not
// counted. The gateway calls it periodically and at shutdown, off the request path.
func (a *Authenticator) FlushUsage(ctx context.Context, touch func(ctx context.Context, at time.Time, keyIDs ...string) error) error {
	type pending struct {
		use  *keyUse
		last int64
	}
	var ids []string
	var seen []pending
	a.mu.Lock()
	for _, h := range a.known.Keys() {
		e, ok := a.known.Peek(h)
		if !ok || e.use == nil {
			continue
		}
		if last := e.use.last.Load(); last > e.use.flushed.Load() {
			ids = append(ids, e.p.KeyID)
			seen = append(seen, pending{e.use, last})
		}
	}
	a.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	if err := touch(ctx, a.now(), ids...); err != nil {
		return fmt.Errorf("tenancy: flush key usage: %w", err)
	}
	for _, p := range seen {
		p.use.flushed.Store(p.last)
	}
	return nil
}

// InvalidateKey drops the cached answer for the key with this id, so the next request with
// it goes to the store. Service calls it after revoking; call it yourself after changing a
// key's row any other way. It walks the whole cache: an admin path, not a hot one.
func (a *Authenticator) InvalidateKey(keyID string) {
	a.invalidate(func(e authEntry) bool { return e.p.KeyID == keyID })
}

// InvalidateTenant drops the cached answers for every key of the tenant. Service calls it
// after changing the tenant's status.
func (a *Authenticator) InvalidateTenant(tenantID string) {
	a.invalidate(func(e authEntry) bool { return e.p.TenantID == tenantID })
}

// Purge drops every cached answer, known and unknown.
func (a *Authenticator) Purge() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	a.known.Purge()
	a.unknown.Purge()
}

// forgetUnknown drops a hash from the unknown-key cache, for a key just created.
func (a *Authenticator) forgetUnknown(h [32]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unknown.Remove(h)
}

func (a *Authenticator) invalidate(match func(authEntry) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	for _, h := range a.known.Keys() {
		if e, ok := a.known.Peek(h); ok && match(e) {
			a.known.Remove(h)
		}
	}
}
