package admin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SQLiteStore is a Store in an SQLite database. Times are INTEGER unix microseconds (UTC).
// SQLite serialises writers, so each statement and transaction here is atomic against
// every other user of the file.
type SQLiteStore struct {
	db *sql.DB
}

var _ Store = (*SQLiteStore)(nil)

// NewSQLiteStore returns a Store over db (see package sqlitedb), to which the caller has
// applied the migrations. The caller keeps ownership of db.
func NewSQLiteStore(db *sql.DB) *SQLiteStore { return &SQLiteStore{db: db} }

// CreateUser inserts u.
func (s *SQLiteStore) CreateUser(ctx context.Context, u User) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO admin_users (name, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?)`,
		u.Name, u.PasswordHash, micros(u.CreatedAt), micros(u.UpdatedAt))
	if err != nil {
		return fmt.Errorf("admin: create user: %w", sqliteErr(err))
	}
	return nil
}

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var c, up int64
	err := row.Scan(&u.Name, &u.PasswordHash, &c, &up)
	u.CreatedAt, u.UpdatedAt = fromMicros(c), fromMicros(up)
	return u, err
}

// GetUser returns the user, or ErrNotFound.
func (s *SQLiteStore) GetUser(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT name, password_hash, created_at, updated_at FROM admin_users WHERE name = ?`, name))
	if err != nil {
		return User{}, fmt.Errorf("admin: get user: %w", sqliteErr(err))
	}
	return u, nil
}

// ListUsers returns every user by name.
func (s *SQLiteStore) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, password_hash, created_at, updated_at FROM admin_users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("admin: list users: %w", sqliteErr(err))
	}
	defer rows.Close()
	var us []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("admin: list users: %w", err)
		}
		us = append(us, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("admin: list users: %w", err)
	}
	return us, nil
}

// CountUsers is how many users exist.
func (s *SQLiteStore) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM admin_users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("admin: count users: %w", err)
	}
	return n, nil
}

// SetPassword replaces the hash and ends the user's sessions.
func (s *SQLiteStore) SetPassword(ctx context.Context, name, hash string, at time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE admin_users SET password_hash = ?, updated_at = ? WHERE name = ?`, hash, micros(at), name)
		if err != nil {
			return fmt.Errorf("admin: set password: %w", sqliteErr(err))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("admin: set password: %w", ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM admin_sessions WHERE username = ?`, name); err != nil {
			return fmt.Errorf("admin: set password: end sessions: %w", err)
		}
		return nil
	})
}

// RehashPassword swaps the hash if it is still oldHash.
func (s *SQLiteStore) RehashPassword(ctx context.Context, name, oldHash, newHash string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE admin_users SET password_hash = ? WHERE name = ? AND password_hash = ?`,
		newHash, name, oldHash); err != nil {
		return fmt.Errorf("admin: rehash password: %w", err)
	}
	return nil
}

// DeleteUser removes the user unless it is the last one: the count and the delete are one
// statement, and SQLite runs one writer at a time, so two removals cannot both pass.
func (s *SQLiteStore) DeleteUser(ctx context.Context, name string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM admin_users WHERE name = ? AND (SELECT count(*) FROM admin_users) > 1`, name)
		if err != nil {
			return fmt.Errorf("admin: delete user: %w", sqliteErr(err))
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM admin_users WHERE name = ?)`, name).Scan(&exists); err != nil {
			return fmt.Errorf("admin: delete user: %w", err)
		}
		if !exists {
			return fmt.Errorf("admin: delete user: %w", ErrNotFound)
		}
		return ErrLastUser
	})
}

// RecordFailure counts a failed sign-in (see Store); the INSERT first makes the
// transaction a writer at once, so concurrent failures are counted one after the other.
func (s *SQLiteStore) RecordFailure(ctx context.Context, username string, at time.Time, window time.Duration, max int, lockFor time.Duration) (Failures, error) {
	at = stamp(at)
	var f Failures
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO admin_login_failures (username, failures, last_failure) VALUES (?, 0, ?)
			ON CONFLICT (username) DO NOTHING`, username, micros(at)); err != nil {
			return err
		}
		var (
			prev   int
			last   int64
			locked sql.NullInt64
		)
		if err := tx.QueryRowContext(ctx, `SELECT failures, last_failure, locked_until FROM admin_login_failures WHERE username = ?`,
			username).Scan(&prev, &last, &locked); err != nil {
			return err
		}
		f = nextFailures(prev, fromMicros(last), fromNullMicros(locked), at, window, max, lockFor)
		_, err := tx.ExecContext(ctx, `UPDATE admin_login_failures SET failures = ?, last_failure = ?, locked_until = ? WHERE username = ?`,
			f.Count, micros(at), nullMicros(f.LockedUntil), username)
		return err
	})
	if err != nil {
		return Failures{}, fmt.Errorf("admin: record failure: %w", sqliteErr(err))
	}
	return f, nil
}

// GetFailures returns the username's failures.
func (s *SQLiteStore) GetFailures(ctx context.Context, username string) (Failures, error) {
	var f Failures
	var locked sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT failures, locked_until FROM admin_login_failures WHERE username = ?`, username).
		Scan(&f.Count, &locked)
	if errors.Is(err, sql.ErrNoRows) {
		return Failures{}, nil
	}
	if err != nil {
		return Failures{}, fmt.Errorf("admin: get failures: %w", err)
	}
	if t := fromNullMicros(locked); t != nil {
		f.LockedUntil = *t
	}
	return f, nil
}

// ClearFailures forgets the username's failures and stale rows.
func (s *SQLiteStore) ClearFailures(ctx context.Context, username string, before time.Time) error {
	b := micros(before)
	_, err := s.db.ExecContext(ctx,
		`DELETE FROM admin_login_failures WHERE username = ?
		    OR (last_failure < ? AND (locked_until IS NULL OR locked_until < ?))`, username, b, b)
	if err != nil {
		return fmt.Errorf("admin: clear failures: %w", err)
	}
	return nil
}

// CreateSession inserts the session.
func (s *SQLiteStore) CreateSession(ctx context.Context, ss Session) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO admin_sessions (token_hash, username, created_at, expires_at, client_addr) VALUES (?, ?, ?, ?, ?)`,
		ss.TokenHash[:], ss.Username, micros(ss.CreatedAt), micros(ss.ExpiresAt), ss.ClientAddr)
	if err != nil {
		return fmt.Errorf("admin: create session: %w", sqliteErr(err))
	}
	return nil
}

// GetSession returns the session of the token hash, or ErrNotFound.
func (s *SQLiteStore) GetSession(ctx context.Context, tokenHash [32]byte) (Session, error) {
	var ss Session
	var h []byte
	var c, e int64
	err := s.db.QueryRowContext(ctx,
		`SELECT token_hash, username, created_at, expires_at, client_addr FROM admin_sessions WHERE token_hash = ?`, tokenHash[:]).
		Scan(&h, &ss.Username, &c, &e, &ss.ClientAddr)
	if err != nil {
		return Session{}, fmt.Errorf("admin: get session: %w", sqliteErr(err))
	}
	copy(ss.TokenHash[:], h)
	ss.CreatedAt, ss.ExpiresAt = fromMicros(c), fromMicros(e)
	return ss, nil
}

// DeleteSession ends the session.
func (s *SQLiteStore) DeleteSession(ctx context.Context, tokenHash [32]byte) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM admin_sessions WHERE token_hash = ?`, tokenHash[:]); err != nil {
		return fmt.Errorf("admin: delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions expired before the time.
func (s *SQLiteStore) DeleteExpiredSessions(ctx context.Context, before time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM admin_sessions WHERE expires_at < ?`, micros(before)); err != nil {
		return fmt.Errorf("admin: delete expired sessions: %w", err)
	}
	return nil
}

// AppendAudit adds the event.
func (s *SQLiteStore) AppendAudit(ctx context.Context, e Event) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO admin_audit (at, actor, action, target, client_addr, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		micros(e.At), e.Actor, e.Action, e.Target, e.ClientAddr, e.Detail)
	if err != nil {
		return fmt.Errorf("admin: append audit: %w", err)
	}
	return nil
}

// ListAudit returns events newest first.
func (s *SQLiteStore) ListAudit(ctx context.Context, limit int, before int64) ([]Event, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT id, at, actor, action, target, client_addr, detail FROM admin_audit WHERE id < ? ORDER BY id DESC LIMIT ?`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("admin: list audit: %w", err)
	}
	defer rows.Close()
	var es []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.ClientAddr, &e.Detail); err != nil {
			return nil, fmt.Errorf("admin: list audit: %w", err)
		}
		e.At = fromMicros(at)
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("admin: list audit: %w", err)
	}
	return es, nil
}

func (s *SQLiteStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func micros(t time.Time) int64 { return stamp(t).UnixMicro() }

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMicros(n.Int64)
	return &t
}

func sqliteErr(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if msg := err.Error(); strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "PRIMARY KEY constraint") {
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}
