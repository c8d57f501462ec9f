package loom

import (
	"context"
	"sync/atomic"

	"github.com/loom-gateway/loom/tenancy"
)

// notifyStats counts what Listen reported, for StoreStats.
type notifyStats struct{ changes, resets, errors atomic.Int64 }

// listen applies the changes the Store announces to the auth and route caches, in a
// goroutine that ends at Shutdown. While the announcing connection is down, cached answers
// live out their TTL (Config.AuthCacheTTL); when it is back, every cache is purged, since
// changes made meanwhile were missed.
func (g *Gateway) listen(n tenancy.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
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
				case tenancy.ChangeTenant, tenancy.ChangeProviders: // a deleted tenant's routes go too
					g.routes.forget(c.TenantID)
				default:
					g.routes.purge()
				}
			},
			Reset: func() {
				g.notified.resets.Add(1)
				g.auth.Purge()
				g.routes.purge()
			},
			Error: func(err error) {
				g.notified.errors.Add(1)
				g.log.Warn("store change notifications interrupted; cached keys and routes expire by their TTL until they return",
					"err", err, "ttl", g.cfg.AuthCacheTTL)
			},
		})
	}()
}
