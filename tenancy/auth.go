package tenancy

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/loom-gateway/loom/internal/ttlcache"
)

// Defaults of AuthOptions.
const (
	DefaultAuthCacheSize = 10000
	DefaultAuthCacheTTL  = 30 * time.Second
	// DefaultAuthStaleFor is how long past its TTL a known key's answer is kept for a store
	// outage: long enough for a failover, a restart or a bad migration to be rolled back
	// unnoticed by clients, short enough that an outage nobody attends to does not leave
	// the data plane on an old view of its keys for good.
	DefaultAuthStaleFor = time.Hour
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
	// deactivation made on another replica takes to reach this one when nothing announces
	// it (on this replica, Service purges the cache at once; a Notifier's announcements,
	// handed to Apply, do the same for other replicas' writes). If zero or negative,
	// DefaultAuthCacheTTL (30s) is used.
	TTL time.Duration
	// StaleFor is how long past its TTL a cached answer (or the key set) still answers
	// while the store cannot be reached (any store error but ErrNotFound): a key is
	// judged on what this process last read about it for at most TTL + StaleFor. During
	// that window a revocation made on another replica (one that can still write to the
	// store) takes effect here once this process reaches the store again, within
	// min(TTL, 5s) of that, and never later than TTL + StaleFor after the revocation.
	// If zero, DefaultAuthStaleFor (1h); if negative, a store error always fails the
	// request.
	StaleFor time.Duration
	// Now is the clock used for cache expiry and, in Service, for timestamps.
	// If nil, time.Now is used.
	Now func() time.Time
}

// AuthStats reports how an Authenticator has fared with its store.
type AuthStats struct {
	// ServedStale counts answers given from the cache or the key set, past their TTL,
	// because the store could not be reached.
	ServedStale int64
	// StaleUntil is when the last answer read from the store stops being usable in an
	// outage (zero if none was read, or StaleFor is negative): until then, a store
	// outage is ridden through for at least the keys read last.
	StaleUntil time.Time
	// KeySetKeys is the number of keys in the key set and KeySetAt when it was read
	// (zero without RefreshKeySet).
	KeySetKeys int
	KeySetAt   time.Time
	// CacheHits counts keys answered from the cache (known or unknown keys), CacheMisses
	// those looked up in the store, and StoreErrors the lookups that failed (answered
	// stale or refused with the error).
	CacheHits, CacheMisses, StoreErrors int64
}

// authEntry is one cached answer: an authenticated principal, or a refusal (ErrRevokedKey,
// ErrTenantInactive) that still names its tenant and key so invalidation can find it.
type authEntry struct {
	p   Principal
	err error
	use *keyUse // nil for refusals
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
//
// When the store cannot be reached, a known key whose answer expired is answered from the
// cache for StaleFor more (see AuthOptions.StaleFor), and a key not in the cache from the
// key set, when RefreshKeySet has loaded one: the data plane outlives the database.
type Authenticator struct {
	store      Store
	ttl        time.Duration
	staleFor   time.Duration // < 0: never serve stale
	unknownTTL time.Duration
	now        func() time.Time
	flights    singleflight.Group
	stale      atomic.Int64 // answers served stale
	// hits, misses and storeErrors count cached answers, store lookups and failed lookups.
	hits, misses, storeErrors atomic.Int64
	lastRead                  atomic.Int64 // unix nanoseconds of the latest answer read, for StaleUntil

	// known caches the answers for keys the store has; its generation also guards the
	// key set. unknown remembers hashes the store did not have.
	known   *ttlcache.Cache[[32]byte, authEntry]
	unknown *ttlcache.Cache[[32]byte, struct{}]
	// keySet holds every active key as last read by RefreshKeySet at keySetAt: the
	// answer for keys not in known during an outage. Guarded by known's lock.
	keySet   map[[32]byte]Principal
	keySetAt time.Time
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
	if opts.StaleFor == 0 {
		opts.StaleFor = DefaultAuthStaleFor
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	unknownTTL := min(opts.TTL, maxUnknownTTL)
	return &Authenticator{
		store:      store,
		ttl:        opts.TTL,
		staleFor:   opts.StaleFor,
		unknownTTL: unknownTTL,
		now:        opts.Now,
		known:      ttlcache.New[[32]byte, authEntry](ttlcache.Options{Size: opts.Size, TTL: opts.TTL, StaleFor: opts.StaleFor, Now: opts.Now}),
		unknown:    ttlcache.New[[32]byte, struct{}](ttlcache.Options{Size: max(opts.Size/10, 1), TTL: unknownTTL, StaleFor: -1, Now: opts.Now}),
	}
}

// Authenticate returns who rawKey belongs to. Refusals are ErrInvalidKey (malformed or
// unknown key), ErrRevokedKey and ErrTenantInactive; with the last two the Principal still
// names the key and tenant, for logging. Any other error is the store's, wrapped, or the
// context's: the key was neither accepted nor refused (the store failed and this process
// knew nothing recent enough about the key to answer without it).
//
// rawKey is the bearer token as sent, without "Bearer ". A key without the "loom_" prefix, or
// longer than 256 bytes, is refused without hashing or a lookup.
func (a *Authenticator) Authenticate(ctx context.Context, rawKey string) (Principal, error) {
	if !plausibleKey(rawKey) {
		return Principal{}, ErrInvalidKey
	}
	h := HashKey(rawKey)
	now := a.now()
	e, degraded, ok, gen := a.known.Get(h, now)
	if ok {
		a.hits.Add(1)
		if degraded {
			a.stale.Add(1)
		}
		return e.answer(now)
	}
	// An expired answer stays cached (replaced by the lookup) for an outage; a hash
	// looked up lately and not found is refused without asking again.
	if _, _, ok, _ := a.unknown.Get(h, now); ok {
		a.hits.Add(1)
		return Principal{}, ErrInvalidKey
	}
	a.misses.Add(1)
	e, err := a.lookup(ctx, h, gen)
	if err != nil {
		if ctx.Err() != nil {
			return Principal{}, err
		}
		a.storeErrors.Add(1)
		var ok bool
		if e, ok = a.fallback(h, gen); !ok {
			return Principal{}, err
		}
		a.stale.Add(1)
	}
	return e.answer(now)
}

// answer returns the entry's verdict, noting the use of an accepted key.
func (e authEntry) answer(now time.Time) (Principal, error) {
	if e.use != nil {
		e.use.last.Store(now.UnixNano())
	}
	return e.p, e.err
}

// fallback is the answer for h when the store failed: the cached one or, for a key not
// cached, the key set's, if read recently enough. It is served until min(TTL, 5s) from
// now, so the store is retried for this key at that pace rather than on every request.
func (a *Authenticator) fallback(h [32]byte, gen uint64) (authEntry, bool) {
	if e, ok := a.known.Stale(h, gen); ok {
		return e, true
	}
	var (
		p     Principal
		inSet bool
		at    time.Time
	)
	a.known.Locked(func() { p, inSet = a.keySet[h]; at = a.keySetAt })
	if !inSet {
		return authEntry{}, false
	}
	e := authEntry{p: p, use: &keyUse{}}
	return e, a.known.PutStale(h, e, at, gen)
}

// lookup asks the store, sharing the call with concurrent misses for the same key that saw
// the same generation. A caller arriving after an invalidation gets a fresh lookup rather
// than joining one that started before it.
func (a *Authenticator) lookup(ctx context.Context, h [32]byte, gen uint64) (authEntry, error) {
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
		return authEntry{}, fmt.Errorf("tenancy: authenticate: %w", context.Cause(ctx))
	}
	if r.Err != nil && ctx.Err() == nil &&
		(errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
		// The caller whose context ran the shared lookup went away; ours has not.
		e, err := a.fetch(ctx, h, gen)
		r = singleflight.Result{Val: e, Err: err}
	}
	if r.Err != nil {
		return authEntry{}, r.Err
	}
	return r.Val.(authEntry), nil
}

// fetch looks the hash up in the store, judges the answer and caches it unless an
// invalidation happened since gen was read.
func (a *Authenticator) fetch(ctx context.Context, h [32]byte, gen uint64) (authEntry, error) {
	k, t, err := a.store.LookupKey(ctx, h)
	if errors.Is(err, ErrNotFound) {
		a.known.Remove(h) // deleted since it was cached
		a.unknown.Put(h, struct{}{}, a.now(), a.unknown.Gen())
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
	read := a.now()
	e := authEntry{p: Principal{TenantID: t.ID, TenantName: t.Name, KeyID: k.ID}}
	switch {
	case k.Status != KeyActive:
		e.err = ErrRevokedKey
	case t.Status != TenantActive:
		e.err = ErrTenantInactive
	default:
		e.use = &keyUse{}
	}
	if a.known.Put(h, e, read, gen) {
		a.lastRead.Store(read.UnixNano())
	}
	return e, nil
}

// RefreshKeySet reads every active key from the store and keeps them as the key set: the
// answer, during a store outage, for keys this process has not cached (never used since
// start, or evicted). The set is only a fallback; a reachable store is always asked
// first. Call it periodically (the gateway does, every Config.KeySetRefresh); an error
// keeps the previous set.
func (a *Authenticator) RefreshKeySet(ctx context.Context, store Snapshotter) error {
	gen := a.known.Gen()
	read := a.now()
	keys, err := store.ListActiveKeys(ctx)
	if err != nil {
		return fmt.Errorf("tenancy: refresh key set: %w", err)
	}
	set := make(map[[32]byte]Principal, len(keys))
	for _, k := range keys {
		if k.Key.Status == KeyActive && k.Tenant.Status == TenantActive && k.Key.TenantID == k.Tenant.ID {
			set[k.Key.Hash] = Principal{TenantID: k.Tenant.ID, TenantName: k.Tenant.Name, KeyID: k.Key.ID}
		}
	}
	// After an invalidation during the read, the set may predate it: it is dropped, and
	// the next refresh replaces the old set.
	if a.known.IfCurrent(gen, func() { a.keySet, a.keySetAt = set, read }) {
		a.lastRead.Store(read.UnixNano())
	}
	return nil
}

// Stats reports how the Authenticator has fared with its store.
func (a *Authenticator) Stats() AuthStats {
	st := AuthStats{ServedStale: a.stale.Load(), CacheHits: a.hits.Load(), CacheMisses: a.misses.Load(), StoreErrors: a.storeErrors.Load()}
	a.known.Locked(func() { st.KeySetKeys, st.KeySetAt = len(a.keySet), a.keySetAt })
	if last := a.lastRead.Load(); last != 0 && a.staleFor >= 0 {
		st.StaleUntil = a.known.StaleUntil(time.Unix(0, last))
	}
	return st
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
	a.known.Each(func(_ [32]byte, e authEntry) {
		if e.use == nil {
			return
		}
		if last := e.use.last.Load(); last > e.use.flushed.Load() {
			ids = append(ids, e.p.KeyID)
			seen = append(seen, pending{e.use, last})
		}
	})
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

// Purge drops every cached answer, known and unknown, and the key set.
func (a *Authenticator) Purge() {
	a.known.Invalidate(nil, func() { a.keySet = nil })
	a.unknown.Invalidate(nil, nil)
}

// forgetUnknown drops a hash from the unknown-key cache, for a key just created.
func (a *Authenticator) forgetUnknown(h [32]byte) { a.unknown.Remove(h) }

// invalidate drops the matching answers from the cache and the key set, so neither can
// answer for them in a later outage.
func (a *Authenticator) invalidate(match func(authEntry) bool) {
	a.known.Invalidate(func(_ [32]byte, e authEntry) bool { return match(e) }, func() {
		for h, p := range a.keySet {
			if match(authEntry{p: p}) {
				delete(a.keySet, h)
			}
		}
	})
}
