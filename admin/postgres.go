package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore is a Store in PostgreSQL, through pgx.
type PostgresStore struct {
	pool *pgxpool.Pool
}

var _ Store = (*PostgresStore)(nil)

// NewPostgresStore returns a Store over pool, to whose database the caller has applied the
// migrations (package migrations). The caller keeps ownership of pool.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore { return &PostgresStore{pool: pool} }

// CreateUser inserts u.
func (s *PostgresStore) CreateUser(ctx context.Context, u User) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO admin_users (name, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4)`,
		u.Name, u.PasswordHash, stamp(u.CreatedAt), stamp(u.UpdatedAt))
	if err != nil {
		return fmt.Errorf("admin: create user: %w", pgErr(err))
	}
	return nil
}

// GetUser returns the user, or ErrNotFound.
func (s *PostgresStore) GetUser(ctx context.Context, name string) (User, error) {
	var u User
	err := s.pool.QueryRow(ctx, `SELECT name, password_hash, created_at, updated_at FROM admin_users WHERE name = $1`, name).
		Scan(&u.Name, &u.PasswordHash, &u.CreatedAt, &u.UpdatedAt)
	if err != nil {
		return User{}, fmt.Errorf("admin: get user: %w", pgErr(err))
	}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, nil
}

// ListUsers returns every user by name.
func (s *PostgresStore) ListUsers(ctx context.Context) ([]User, error) {
	rows, _ := s.pool.Query(ctx, `SELECT name, password_hash, created_at, updated_at FROM admin_users ORDER BY name`)
	us, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) {
		var u User
		err := row.Scan(&u.Name, &u.PasswordHash, &u.CreatedAt, &u.UpdatedAt)
		u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("admin: list users: %w", pgErr(err))
	}
	return us, nil
}

// CountUsers is how many users exist.
func (s *PostgresStore) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM admin_users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("admin: count users: %w", pgErr(err))
	}
	return n, nil
}

// SetPassword replaces the hash and ends the user's sessions.
func (s *PostgresStore) SetPassword(ctx context.Context, name, hash string, at time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE admin_users SET password_hash = $2, updated_at = $3 WHERE name = $1`, name, hash, stamp(at))
		if err != nil {
			return fmt.Errorf("admin: set password: %w", pgErr(err))
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("admin: set password: %w", ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM admin_sessions WHERE username = $1`, name); err != nil {
			return fmt.Errorf("admin: set password: end sessions: %w", pgErr(err))
		}
		return nil
	})
}

// RehashPassword swaps the hash if it is still oldHash.
func (s *PostgresStore) RehashPassword(ctx context.Context, name, oldHash, newHash string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE admin_users SET password_hash = $3 WHERE name = $1 AND password_hash = $2`,
		name, oldHash, newHash); err != nil {
		return fmt.Errorf("admin: rehash password: %w", pgErr(err))
	}
	return nil
}

// DeleteUser removes the user unless it is the last one. The table lock serialises
// concurrent removals, so two of the last two users cannot both go.
func (s *PostgresStore) DeleteUser(ctx context.Context, name string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE admin_users IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("admin: delete user: %w", pgErr(err))
		}
		var exists bool
		var n int
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM admin_users WHERE name = $1), (SELECT count(*) FROM admin_users)`, name).
			Scan(&exists, &n)
		switch {
		case err != nil:
			return fmt.Errorf("admin: delete user: %w", pgErr(err))
		case !exists:
			return fmt.Errorf("admin: delete user: %w", ErrNotFound)
		case n <= 1:
			return ErrLastUser
		}
		if _, err := tx.Exec(ctx, `DELETE FROM admin_users WHERE name = $1`, name); err != nil {
			return fmt.Errorf("admin: delete user: %w", pgErr(err))
		}
		return nil
	})
}

// RecordFailure counts a failed sign-in (see Store), in a transaction holding the row.
func (s *PostgresStore) RecordFailure(ctx context.Context, username string, at time.Time, window time.Duration, max int, lockFor time.Duration) (Failures, error) {
	at = stamp(at)
	var f Failures
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO admin_login_failures (username, failures, last_failure) VALUES ($1, 0, $2)
			ON CONFLICT (username) DO NOTHING`, username, at); err != nil {
			return err
		}
		var (
			prev   int
			last   time.Time
			locked *time.Time
		)
		if err := tx.QueryRow(ctx, `SELECT failures, last_failure, locked_until FROM admin_login_failures WHERE username = $1 FOR UPDATE`,
			username).Scan(&prev, &last, &locked); err != nil {
			return err
		}
		f = nextFailures(prev, last, locked, at, window, max, lockFor)
		_, err := tx.Exec(ctx, `UPDATE admin_login_failures SET failures = $2, last_failure = $3, locked_until = $4 WHERE username = $1`,
			username, f.Count, at, nullTime(f.LockedUntil))
		return err
	})
	if err != nil {
		return Failures{}, fmt.Errorf("admin: record failure: %w", pgErr(err))
	}
	return f, nil
}

// GetFailures returns the username's failures.
func (s *PostgresStore) GetFailures(ctx context.Context, username string) (Failures, error) {
	var f Failures
	var locked *time.Time
	err := s.pool.QueryRow(ctx, `SELECT failures, locked_until FROM admin_login_failures WHERE username = $1`, username).
		Scan(&f.Count, &locked)
	if errors.Is(err, pgx.ErrNoRows) {
		return Failures{}, nil
	}
	if err != nil {
		return Failures{}, fmt.Errorf("admin: get failures: %w", pgErr(err))
	}
	if locked != nil {
		f.LockedUntil = locked.UTC()
	}
	return f, nil
}

// ClearFailures forgets the username's failures and stale rows.
func (s *PostgresStore) ClearFailures(ctx context.Context, username string, before time.Time) error {
	_, err := s.pool.Exec(ctx,
		`DELETE FROM admin_login_failures WHERE username = $1
		    OR (last_failure < $2 AND (locked_until IS NULL OR locked_until < $2))`, username, stamp(before))
	if err != nil {
		return fmt.Errorf("admin: clear failures: %w", pgErr(err))
	}
	return nil
}

// CreateSession inserts the session.
func (s *PostgresStore) CreateSession(ctx context.Context, ss Session) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO admin_sessions (token_hash, username, created_at, expires_at, client_addr) VALUES ($1, $2, $3, $4, $5)`,
		ss.TokenHash[:], ss.Username, stamp(ss.CreatedAt), stamp(ss.ExpiresAt), ss.ClientAddr)
	if err != nil {
		return fmt.Errorf("admin: create session: %w", pgErr(err))
	}
	return nil
}

// GetSession returns the session of the token hash, or ErrNotFound.
func (s *PostgresStore) GetSession(ctx context.Context, tokenHash [32]byte) (Session, error) {
	var ss Session
	var h []byte
	err := s.pool.QueryRow(ctx,
		`SELECT token_hash, username, created_at, expires_at, client_addr FROM admin_sessions WHERE token_hash = $1`, tokenHash[:]).
		Scan(&h, &ss.Username, &ss.CreatedAt, &ss.ExpiresAt, &ss.ClientAddr)
	if err != nil {
		return Session{}, fmt.Errorf("admin: get session: %w", pgErr(err))
	}
	copy(ss.TokenHash[:], h)
	ss.CreatedAt, ss.ExpiresAt = ss.CreatedAt.UTC(), ss.ExpiresAt.UTC()
	return ss, nil
}

// DeleteSession ends the session.
func (s *PostgresStore) DeleteSession(ctx context.Context, tokenHash [32]byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM admin_sessions WHERE token_hash = $1`, tokenHash[:]); err != nil {
		return fmt.Errorf("admin: delete session: %w", pgErr(err))
	}
	return nil
}

// DeleteExpiredSessions removes sessions expired before the time.
func (s *PostgresStore) DeleteExpiredSessions(ctx context.Context, before time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM admin_sessions WHERE expires_at < $1`, stamp(before)); err != nil {
		return fmt.Errorf("admin: delete expired sessions: %w", pgErr(err))
	}
	return nil
}

// AppendAudit adds the event.
func (s *PostgresStore) AppendAudit(ctx context.Context, e Event) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO admin_audit (at, actor, action, target, client_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)`,
		stamp(e.At), e.Actor, e.Action, e.Target, e.ClientAddr, e.Detail)
	if err != nil {
		return fmt.Errorf("admin: append audit: %w", pgErr(err))
	}
	return nil
}

// ListAudit returns events newest first.
func (s *PostgresStore) ListAudit(ctx context.Context, limit int, before int64) ([]Event, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, _ := s.pool.Query(ctx,
		`SELECT id, at, actor, action, target, client_addr, detail FROM admin_audit WHERE id < $1 ORDER BY id DESC LIMIT $2`,
		before, limit)
	es, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
		var e Event
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.ClientAddr, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("admin: list audit: %w", pgErr(err))
	}
	return es, nil
}

func pgErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

// stamp is t at microsecond precision in UTC, or now if t is zero.
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Microsecond)
}
