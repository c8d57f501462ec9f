package ttlcache

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(staleFor time.Duration) (*Cache[string, int], *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return New[string, int](Options{Size: 2, TTL: 30 * time.Second, StaleFor: staleFor, Now: c.now}), c
}

func TestFreshThenStale(t *testing.T) {
	c, clk := newTest(time.Minute)
	_, _, ok, gen := c.Get("a", clk.now())
	if ok {
		t.Fatal("empty cache answered")
	}
	if !c.Put("a", 1, clk.now(), gen) {
		t.Fatal("Put refused at the current generation")
	}
	clk.advance(29 * time.Second)
	if v, degraded, ok, _ := c.Get("a", clk.now()); !ok || v != 1 || degraded {
		t.Fatalf("within TTL: %d %v %v", v, degraded, ok)
	}
	clk.advance(time.Second)
	_, _, ok, gen = c.Get("a", clk.now())
	if ok {
		t.Fatal("answered at TTL")
	}
	// The store fails: the expired answer serves, degraded, for the retry interval.
	if v, ok := c.Stale("a", gen); !ok || v != 1 {
		t.Fatalf("Stale within TTL+StaleFor: %d %v", v, ok)
	}
	if v, degraded, ok, _ := c.Get("a", clk.now()); !ok || v != 1 || !degraded {
		t.Fatalf("after Stale: %d %v %v, want a degraded answer", v, degraded, ok)
	}
	clk.advance(MaxRetry)
	if _, _, ok, _ := c.Get("a", clk.now()); ok {
		t.Fatal("a stale answer served past the retry interval")
	}
	clk.advance(time.Minute - MaxRetry)
	if _, ok := c.Stale("a", c.Gen()); ok {
		t.Fatal("served stale at TTL+StaleFor")
	}
}

func TestNeverStale(t *testing.T) {
	c, clk := newTest(-1)
	c.Put("a", 1, clk.now(), c.Gen())
	clk.advance(31 * time.Second)
	if _, ok := c.Stale("a", c.Gen()); ok {
		t.Fatal("served stale with a negative StaleFor")
	}
	if c.PutStale("b", 2, clk.now(), c.Gen()) {
		t.Fatal("PutStale with a negative StaleFor")
	}
}

// An answer read before an invalidation is not cached after it, and neither is state kept
// beside the cache.
func TestGenerations(t *testing.T) {
	c, clk := newTest(time.Minute)
	_, _, _, gen := c.Get("a", clk.now())
	c.Invalidate(func(k string, _ int) bool { return k == "a" }, nil)
	if c.Put("a", 1, clk.now(), gen) {
		t.Fatal("Put accepted an answer read before an invalidation")
	}
	if _, _, ok, _ := c.Get("a", clk.now()); ok {
		t.Fatal("the stale read was cached")
	}
	if c.IfCurrent(gen, func() { t.Fatal("IfCurrent ran at an old generation") }) {
		t.Fatal("IfCurrent reported an old generation current")
	}
	c.Put("a", 1, clk.now(), c.Gen())
	c.Put("b", 2, clk.now(), c.Gen())
	ran := false
	c.Invalidate(func(k string, _ int) bool { return k == "a" }, func() { ran = true })
	if _, _, ok, _ := c.Get("a", clk.now()); ok || !ran {
		t.Fatalf("Invalidate: a still cached %v, also ran %v", ok, ran)
	}
	if _, _, ok, _ := c.Get("b", clk.now()); !ok {
		t.Fatal("Invalidate dropped an answer it did not match")
	}
	c.Invalidate(nil, nil)
	if c.Len() != 0 {
		t.Fatalf("Len after a purge = %d", c.Len())
	}
}

func TestPutStaleBoundedBySnapshotAge(t *testing.T) {
	c, clk := newTest(time.Minute)
	read := clk.now()
	clk.advance(89 * time.Second)
	if !c.PutStale("a", 1, read, c.Gen()) {
		t.Fatal("a snapshot within TTL+StaleFor refused")
	}
	if _, degraded, ok, _ := c.Get("a", clk.now()); !ok || !degraded {
		t.Fatal("PutStale's answer does not serve degraded")
	}
	clk.advance(time.Second)
	if c.PutStale("b", 2, read, c.Gen()) {
		t.Fatal("a snapshot at TTL+StaleFor accepted")
	}
	// The answer from that snapshot does not outlive it either.
	if _, ok := c.Stale("a", c.Gen()); ok {
		t.Fatal("a snapshot's answer served stale past the snapshot's window")
	}
}

// ExpireAll makes every answer be read again, but keeps it for a store failure, and stops
// reads begun before it from caching.
func TestExpireAll(t *testing.T) {
	c, clk := newTest(time.Minute)
	c.Put("a", 1, clk.now(), c.Gen())
	gen := c.Gen()
	c.ExpireAll()
	if _, _, ok, _ := c.Get("a", clk.now()); ok {
		t.Fatal("fresh after ExpireAll")
	}
	if c.Put("a", 2, clk.now(), gen) {
		t.Fatal("a read begun before ExpireAll was cached")
	}
	if v, ok := c.Stale("a", c.Gen()); !ok || v != 1 {
		t.Fatalf("Stale after ExpireAll = %d, %v; want the expired answer", v, ok)
	}
}
