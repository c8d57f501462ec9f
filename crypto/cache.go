package crypto

import (
	"crypto/cipher"
	"hash/maphash"

	lru "github.com/hashicorp/golang-lru/v2"
)

// cacheKey names a derived cipher: a tenant's key under one master key version.
type cacheKey struct {
	version int
	tenant  string
}

// aeadCache is a bounded LRU cache of derived ciphers, split into shards by tenant so that
// concurrent seals for different tenants rarely wait on the same lock (an LRU lookup
// updates recency, so every Get takes its shard's lock).
type aeadCache struct {
	seed   maphash.Seed
	shards []*lru.Cache[cacheKey, cipher.AEAD]
}

// cacheShards is the number of shards for caches large enough to split.
const cacheShards = 16

func newAEADCache(size int) *aeadCache {
	n := 1
	if size >= cacheShards*64 {
		n = cacheShards
	}
	per := (size + n - 1) / n
	c := &aeadCache{seed: maphash.MakeSeed(), shards: make([]*lru.Cache[cacheKey, cipher.AEAD], n)}
	for i := range c.shards {
		s, err := lru.New[cacheKey, cipher.AEAD](per)
		if err != nil { // only for a size ≤ 0, which NewKeyring rules out
			panic("crypto: " + err.Error())
		}
		c.shards[i] = s
	}
	return c
}

func (c *aeadCache) shard(k cacheKey) *lru.Cache[cacheKey, cipher.AEAD] {
	if len(c.shards) == 1 {
		return c.shards[0]
	}
	return c.shards[maphash.String(c.seed, k.tenant)%uint64(len(c.shards))]
}

func (c *aeadCache) get(k cacheKey) (cipher.AEAD, bool) { return c.shard(k).Get(k) }

func (c *aeadCache) add(k cacheKey, a cipher.AEAD) { c.shard(k).Add(k, a) }

// len reports the number of cached ciphers.
func (c *aeadCache) len() int {
	n := 0
	for _, s := range c.shards {
		n += s.Len()
	}
	return n
}

// removeTenant drops every cached cipher of the tenant, whatever its key version.
func (c *aeadCache) removeTenant(tenant string) {
	s := c.shard(cacheKey{tenant: tenant})
	for _, k := range s.Keys() {
		if k.tenant == tenant {
			s.Remove(k)
		}
	}
}
