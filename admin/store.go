package admin

import (
	"context"
	"time"
)

// User is an admin user. PasswordHash is the argon2id PHC string; it never leaves the
// package's API answers.
type User struct {
	Name         string
	PasswordHash string
	CreatedAt    time.Time
	UpdatedAt    time.Time // when the password last changed
}

// Session is a sign-in: only the SHA-256 of its token is stored.
type Session struct {
	TokenHash  [32]byte
	Username   string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	ClientAddr string
}

// Event is one admin audit record. It names who did what to which target, when and from
// where; it never holds a secret (a password, a token, an API key).
type Event struct {
	ID         int64 // assigned by the store, increasing
	At         time.Time
	Actor      string // the admin username, "cli", or "" for a failed sign-in of an unknown name
	Action     string // e.g. "login.failure", "tenant.create", "key.revoke"
	Target     string // the tenant id, "tenant id/key id", username, …
	ClientAddr string
	Detail     string // non-secret facts: a new name or status, a failure reason
}

// Failures is the count of failed sign-ins of a username in the current window.
type Failures struct {
	Count       int
	LockedUntil time.Time // zero when not locked
}

// Store persists admin users, sign-in sessions, failed sign-in counts and the audit log.
// Implementations must be safe for concurrent use and share state across every process
// using the same database (so a lock-out or a sign-out holds on every replica). Methods
// return ErrNotFound (possibly wrapped) for a missing row and ErrConflict for a duplicate
// user. Times are kept at microsecond precision and returned in UTC.
type Store interface {
	CreateUser(ctx context.Context, u User) error
	// GetUser returns the user with its PasswordHash.
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	// SetPassword replaces the user's hash and ends every session of the user, in one
	// transaction.
	SetPassword(ctx context.Context, name, hash string, at time.Time) error
	// RehashPassword replaces the user's hash with newHash if it is still oldHash (a
	// sign-in upgrading the parameters must not undo a password change made meanwhile);
	// sessions are kept.
	RehashPassword(ctx context.Context, name, oldHash, newHash string) error
	// DeleteUser removes the user and its sessions, in a transaction that refuses with
	// ErrLastUser to remove the only remaining user, even when two removals race.
	DeleteUser(ctx context.Context, name string) error
	// CountUsers is how many admin users exist.
	CountUsers(ctx context.Context) (int, error)

	// RecordFailure counts a failed sign-in of the username (which need not exist) at
	// the given time: the count restarts when the last failure is older than window, and
	// when it reaches max the name is locked until at+lockFor (and the count restarts).
	RecordFailure(ctx context.Context, username string, at time.Time, window time.Duration, max int, lockFor time.Duration) (Failures, error)
	// GetFailures returns the username's count (zero when none).
	GetFailures(ctx context.Context, username string) (Failures, error)
	// ClearFailures forgets the username's failures (after a successful sign-in or a
	// password reset), and failure rows older than before.
	ClearFailures(ctx context.Context, username string, before time.Time) error

	CreateSession(ctx context.Context, s Session) error
	// GetSession returns the session of that token hash, expired or not.
	GetSession(ctx context.Context, tokenHash [32]byte) (Session, error)
	// DeleteSession ends a session; ending an unknown one is not an error.
	DeleteSession(ctx context.Context, tokenHash [32]byte) error
	// DeleteExpiredSessions removes sessions that expired before the given time.
	DeleteExpiredSessions(ctx context.Context, before time.Time) error

	// AppendAudit adds e (its ID is assigned). The log is append-only: the stores refuse
	// UPDATE and DELETE of audit rows in the database itself.
	AppendAudit(ctx context.Context, e Event) error
	// ListAudit returns at most limit events, newest first, with ID below before (0: from
	// the newest).
	ListAudit(ctx context.Context, limit int, before int64) ([]Event, error)
}
