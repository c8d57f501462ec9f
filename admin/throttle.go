package admin

import (
	"sync"
	"time"
)

// addrLimiter counts failed sign-ins per client address in this process's memory.
type addrLimiter struct {
	max    int
	window time.Duration
	mu     sync.Mutex
	m      map[string]addrCount
}

type addrCount struct {
	n     int
	start time.Time
}

// maxAddrs bounds the addresses kept; past it, expired entries are dropped first, and if
// none has expired the table starts over (an attacker with that many addresses is not
// slowed by per-address counts anyway; the per-username lock still holds).
const maxAddrs = 100_000

func newAddrLimiter(max int, window time.Duration) *addrLimiter {
	return &addrLimiter{max: max, window: window, m: map[string]addrCount{}}
}

// blocked reports whether addr has failed max times in the current window, and how long
// until the window ends.
func (l *addrLimiter) blocked(addr string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[addr]
	if !ok {
		return 0, false
	}
	end := c.start.Add(l.window)
	if !now.Before(end) {
		delete(l.m, addr)
		return 0, false
	}
	return end.Sub(now), c.n >= l.max
}

// fail counts a failed sign-in from addr.
func (l *addrLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[addr]
	if !ok || !now.Before(c.start.Add(l.window)) {
		if len(l.m) >= maxAddrs {
			for a, e := range l.m {
				if !now.Before(e.start.Add(l.window)) {
					delete(l.m, a)
				}
			}
			if len(l.m) >= maxAddrs {
				clear(l.m)
			}
		}
		c = addrCount{start: now}
	}
	c.n++
	l.m[addr] = c
}
