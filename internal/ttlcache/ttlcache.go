// Package ttlcache is the cache discipline Loom's data plane reads the tenancy store
// through (API keys in tenancy.Authenticator, tenant routes in the gateway): an LRU of
// answers that are fresh for a TTL after they were read, then stale; a stale answer still
// serves, for a bounded time, while the store cannot be reached; and a generation counter
// so that an answer read before an invalidation is never cached after it.
package ttlcache

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// MaxRetry is the longest a stale answer is served before the store is asked again.
const MaxRetry = 5 * time.Second

// Options configures a Cache. Size and TTL must be positive.
type Options struct {
	Size int
	TTL  time.Duration
	// StaleFor is how long past TTL an answer still serves while the store fails; if
	// negative, never.
	StaleFor time.Duration
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
}

// Cache is safe for concurrent use.
type Cache[K comparable, V any] struct {
	ttl, staleFor, retry time.Duration
	now                  func() time.Time

	mu  sync.Mutex
	gen uint64 // counts invalidations
	lru *simplelru.LRU[K, entry[V]]
}

type entry[V any] struct {
	val      V
	expires  time.Time // fresh until then
	stale    time.Time // read + TTL + StaleFor: serves in an outage until then
	degraded bool      // served because the store failed
}

// New returns an empty cache.
func New[K comparable, V any](o Options) *Cache[K, V] {
	if o.Now == nil {
		o.Now = time.Now
	}
	lru, _ := simplelru.NewLRU[K, entry[V]](max(o.Size, 1), nil) // fails only below 1
	return &Cache[K, V]{ttl: o.TTL, staleFor: o.StaleFor, retry: min(o.TTL, MaxRetry), now: o.Now, lru: lru}
}

// Get returns k's answer if it is fresh at now (the caller's reading of the clock of
// Options.Now), and whether it is a stale answer served through a store failure
// (degraded). gen is the generation to hand Put, Stale or PutStale after asking the store
// about k.
func (c *Cache[K, V]) Get(k K, now time.Time) (v V, degraded, ok bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.lru.Get(k)
	if found && now.Before(e.expires) {
		return e.val, e.degraded, true, c.gen
	}
	return v, false, false, c.gen
}

// Put caches v, read from the store at read, unless an invalidation came after gen; it
// reports whether it did.
func (c *Cache[K, V]) Put(k K, v V, read time.Time, gen uint64) bool {
	e := entry[V]{val: v, expires: read.Add(c.ttl), stale: read.Add(c.ttl + c.staleFor)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return false
	}
	c.lru.Add(k, e)
	return true
}

// Stale is k's answer when the store failed: the cached one, expired or not, as long as
// it was read within TTL + StaleFor. It is then served (degraded) without asking the store
// for min(TTL, MaxRetry), so the store is retried at that pace rather than on every
// request.
func (c *Cache[K, V]) Stale(k K, gen uint64) (v V, ok bool) {
	if c.staleFor < 0 {
		return v, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.lru.Peek(k)
	if !found || !now.Before(e.stale) {
		return v, false
	}
	e.expires, e.degraded = now.Add(c.retry), true
	if c.gen == gen {
		c.lru.Add(k, e)
	}
	return e.val, true
}

// PutStale caches v, read at read from somewhere other than a lookup of k (a snapshot of
// the store), as a degraded answer like Stale's, if read is recent enough (Usable); it
// reports whether v may serve.
func (c *Cache[K, V]) PutStale(k K, v V, read time.Time, gen uint64) bool {
	if !c.Usable(read) {
		return false
	}
	e := entry[V]{val: v, expires: c.now().Add(c.retry), stale: read.Add(c.ttl + c.staleFor), degraded: true}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.lru.Add(k, e)
	}
	return true
}

// Usable reports whether what was read from the store at read may still serve in an
// outage: within TTL + StaleFor of read.
func (c *Cache[K, V]) Usable(read time.Time) bool {
	return c.staleFor >= 0 && !read.IsZero() && c.now().Before(c.StaleUntil(read))
}

// StaleUntil is when what was read at read stops serving in an outage.
func (c *Cache[K, V]) StaleUntil(read time.Time) time.Time { return read.Add(c.ttl + c.staleFor) }

// StaleFor reports the Options' StaleFor.
func (c *Cache[K, V]) StaleFor() time.Duration { return c.staleFor }

// Gen returns the current generation, for a read of the store about more than one key (a
// snapshot) to be applied with IfCurrent.
func (c *Cache[K, V]) Gen() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// IfCurrent runs fn under the cache's lock if no invalidation came after gen, and reports
// whether it did: state kept beside the cache (a snapshot) is replaced this way, so that
// it cannot predate an invalidation.
func (c *Cache[K, V]) IfCurrent(gen uint64, fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return false
	}
	fn()
	return true
}

// Locked runs fn under the cache's lock, to read state kept beside the cache.
func (c *Cache[K, V]) Locked(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn()
}

// Remove drops k's answer without starting a new generation: for an answer the store has
// just contradicted, not for an invalidation.
func (c *Cache[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(k)
}

// Invalidate drops the answers match selects (every answer if match is nil) and starts a
// new generation, so no lookup begun before it caches its answer; also, if not nil, runs
// under the same lock, to invalidate state kept beside the cache. It walks the whole cache
// when match is not nil: an admin path, not a hot one.
func (c *Cache[K, V]) Invalidate(match func(K, V) bool, also func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if match == nil {
		c.lru.Purge()
	} else {
		for _, k := range c.lru.Keys() {
			if e, ok := c.lru.Peek(k); ok && match(k, e.val) {
				c.lru.Remove(k)
			}
		}
	}
	if also != nil {
		also()
	}
}

// ExpireAll makes every answer expired and starts a new generation: each is read from the
// store again on its next use, and still serves through a store failure (Stale) as long as
// it was read recently enough. It is the invalidation for "anything may have changed" that
// keeps the cache's value in an outage.
func (c *Cache[K, V]) ExpireAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok {
			e.expires, e.degraded = time.Time{}, false
			c.lru.Add(k, e)
		}
	}
}

// Each calls fn with every cached answer, fresh or not, under the cache's lock: fn must
// be quick and must not call the cache.
func (c *Cache[K, V]) Each(fn func(K, V)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok {
			fn(k, e.val)
		}
	}
}

// Len is how many answers are cached.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
