package tenancy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// What changed, in Change.What.
const (
	// ChangeKey: a key was revoked (or its row otherwise changed what authenticates) or
	// deleted; KeyID and TenantID name it.
	ChangeKey = "key"
	// ChangeKeyCreated: a key was created; a process that remembered its hash as unknown
	// must forget that.
	ChangeKeyCreated = "key_new"
	// ChangeTenant: the tenant's status or name changed, or it was deleted.
	ChangeTenant = "tenant"
	// ChangeProviders: the tenant's provider configurations changed.
	ChangeProviders = "providers"
	// ChangeAll: anything may have changed (a table was truncated).
	ChangeAll = "all"
)

// Change is one committed write to tenants, keys or provider configurations, as a Notifier
// announces it.
type Change struct {
	What     string `json:"t"`
	TenantID string `json:"tenant,omitempty"`
	KeyID    string `json:"key,omitempty"`
}

// Notifier is the optional part of a Store that announces every change to tenants, keys and
// provider configurations committed by any process sharing its database (another replica,
// the admin command line, a hand-written UPDATE), so a gateway can drop what it cached at
// once instead of waiting out its TTL. The gateway listens when its Store is one; the
// PostgreSQL store is (LISTEN/NOTIFY). The SQLite store is not: an SQLite database serves
// one process, whose own writes go through its Service.
type Notifier interface {
	// Listen calls l.Changed for each change until ctx ends, then returns. It holds a
	// connection of its own and reconnects by itself, with backoff, when that drops,
	// calling l.Reset each time it starts listening (the first time too): changes made
	// while it was not listening were missed, so every cached answer must be checked
	// again (Authenticator.Expire). Errors
	// (the connection lost, a reconnection failed) are reported to l.Error if set.
	Listen(ctx context.Context, l Listener)
}

// Listener receives what a Notifier announces. Its funcs are called from one goroutine,
// one at a time; they must return quickly.
type Listener struct {
	Changed func(Change)
	Reset   func()
	Error   func(error)
}

// Expire makes every cached answer expired, for when changes may have been missed (a
// Notifier's Listener.Reset): each key is checked with the store on its next use, and the
// answers are kept for an outage (AuthOptions.StaleFor), as is the key set. Keys
// remembered as unknown are forgotten.
func (a *Authenticator) Expire() {
	a.known.ExpireAll()
	a.unknown.Invalidate(nil, nil)
}

// Apply drops the cached answers c makes wrong: it is the Authenticator's Listener.Changed.
// An unknown kind of change drops everything.
func (a *Authenticator) Apply(c Change) {
	switch c.What {
	case ChangeKey:
		a.InvalidateKey(c.KeyID)
	case ChangeKeyCreated:
		a.unknown.Invalidate(nil, nil)
	case ChangeTenant:
		a.InvalidateTenant(c.TenantID)
	case ChangeProviders:
	default:
		a.Purge()
	}
}

// The channel, and the application_name of the listening connection (so an operator can
// tell it apart in pg_stat_activity), of PostgresStore.Listen.
const (
	NotifyChannel         = "loom_tenancy"
	NotifyApplicationName = "loom-notify"
)

// Timings of PostgresStore.Listen: the backoff between reconnections grows from
// listenMinBackoff to listenMaxBackoff; listenPing is how long an idle connection waits
// before checking it is still there.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
	listenPing       = 30 * time.Second
	listenConnect    = 10 * time.Second
)

var _ Notifier = (*PostgresStore)(nil)

// Listen implements Notifier with PostgreSQL's LISTEN/NOTIFY: the schema's triggers
// (migration 00010) announce each change on NotifyChannel when its transaction commits.
// The connection is its own, not one of the pool's, made with the pool's settings and
// application_name NotifyApplicationName.
func (s *PostgresStore) Listen(ctx context.Context, l Listener) {
	backoff := listenMinBackoff
	for {
		began := time.Now()
		err := s.listen(ctx, l)
		if ctx.Err() != nil {
			return
		}
		if l.Error != nil {
			l.Error(err)
		}
		if time.Since(began) > time.Minute {
			backoff = listenMinBackoff // it had been working: retry soon
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// listen connects, listens and hands l the notifications until the connection fails or
// ctx ends.
func (s *PostgresStore) listen(ctx context.Context, l Listener) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = NotifyApplicationName
	cctx, cancel := context.WithTimeout(ctx, listenConnect)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+NotifyChannel)
	}
	cancel()
	if err != nil {
		if conn != nil {
			conn.Close(context.Background())
		}
		return fmt.Errorf("tenancy: listen for changes: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if l.Reset != nil {
		l.Reset()
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			pctx, cancel := context.WithTimeout(ctx, listenConnect)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("tenancy: listen for changes: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("tenancy: listen for changes: %w", err)
		}
		var c Change
		if json.Unmarshal([]byte(n.Payload), &c) != nil {
			c = Change{What: ChangeAll}
		}
		if l.Changed != nil {
			l.Changed(c)
		}
	}
}
