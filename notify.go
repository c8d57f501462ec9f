package loom

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-gateway/loom/tenancy"
)

// notifyStats counts what Listen reported, for StoreStats.
type notifyStats struct{ changes, resets, errors atomic.Int64 }

// listen applies the changes the Store announces to the auth and route caches, in a
// goroutine that ends at Shutdown, and returns once the first connection is made (or has
// failed, or firstListenWait has passed), so the first expiry comes before any request. While the announcing connection is down, cached answers live out their TTL
// (Config.AuthCacheTTL); when it is back, every cached answer is expired, since changes
// made meanwhile were missed: each is read from the Store again on its next use, and still
// serves through a Store outage (AuthStaleFor), like any answer past its TTL.
func (g *Gateway) listen(n tenancy.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	var once sync.Once
	started := func() { once.Do(func() { close(first) }) }
	g.loops.Add(2)
	go func() {
		defer g.loops.Done()
		<-g.stop
		cancel()
	}()
	go func() {
		defer g.loops.Done()
		n.Listen(ctx, tenancy.Listener{
			Changed: func(c tenancy.Change) {
				g.notified.changes.Add(1)
				g.auth.Apply(c)
				switch c.What {
				case tenancy.ChangeKey, tenancy.ChangeKeyCreated:
				case tenancy.ChangeTenant: // a deleted tenant's routes and data keys go too
					g.routes.forget(c.TenantID)
					if g.cfg.Keyring != nil {
						g.cfg.Keyring.Forget(c.TenantID)
					}
				case tenancy.ChangeProviders:
					g.routes.forget(c.TenantID)
				default:
					g.routes.purge()
				}
			},
			Reset: func() {
				g.notified.resets.Add(1)
				g.auth.Expire()
				g.routes.expire()
				started()
			},
			Error: func(err error) {
				g.notified.errors.Add(1)
				started()
				g.log.Warn("store change notifications interrupted; cached keys and routes expire by their TTL until they return",
					"err", err, "ttl", g.cfg.AuthCacheTTL)
			},
		})
	}()
	// Bounded: a database down at start is ridden through, not waited for.
	t := time.NewTimer(firstListenWait)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

// firstListenWait bounds how long New waits for the first notification connection.
const firstListenWait = 3 * time.Second
