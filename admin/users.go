package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"
)

// TokenPrefix starts every admin sign-in token, so it is recognisable (and never mistaken
// for a tenant's API key, which starts "loom_").
const TokenPrefix = "loomadm_"

// tokenLen is TokenPrefix and 32 random bytes in unpadded base64url.
var tokenLen = len(TokenPrefix) + base64.RawURLEncoding.EncodedLen(32)

// UsersOptions configures Users. Every zero field has the default its comment names.
type UsersOptions struct {
	// Store keeps users, sessions, failure counts and the audit log. Required.
	Store Store
	// Params are the argon2id costs of new hashes; a hash with lower ones is replaced at
	// the user's next sign-in. If zero, DefaultParams.
	Params Params
	// TokenTTL is how long a sign-in token lasts. If zero, 15 minutes.
	TokenTTL time.Duration
	// MaxFailures wrong passwords for a username within FailureWindow lock that name for
	// LockFor, on every replica (the count is in the Store). If zero: 5, 15 minutes, 15
	// minutes.
	MaxFailures   int
	FailureWindow time.Duration
	LockFor       time.Duration
	// MaxAddrFailures failed sign-ins from one client address within AddrWindow make this
	// process refuse that address's sign-ins until the window ends. The count is kept in
	// this process's memory only: each replica counts on its own, and a restart forgets.
	// If zero: 20 and 15 minutes.
	MaxAddrFailures int
	AddrWindow      time.Duration
	// MaxConcurrentHashes bounds the argon2id computations running at once (each holds
	// Params.Memory), so a burst of sign-ins queues instead of exhausting memory. If zero,
	// GOMAXPROCS.
	MaxConcurrentHashes int
	// Logger receives audit records that could not be written and store errors; never a
	// password or token. If nil, nothing is logged.
	Logger *slog.Logger
	// Now reads the clock. If nil, time.Now.
	Now func() time.Time
}

// Users signs admin users in and out, manages them, and writes the admin audit log. It is
// safe for concurrent use.
type Users struct {
	opt   UsersOptions
	log   *slog.Logger
	dummy string // a hash of a random password, verified for unknown usernames
	addrs *addrLimiter
	slots chan struct{} // one per argon2id computation allowed at once
}

// NewUsers returns Users for opt.
func NewUsers(opt UsersOptions) (*Users, error) {
	if opt.Store == nil {
		return nil, errors.New("admin: UsersOptions.Store is required")
	}
	if opt.Params == (Params{}) {
		opt.Params = DefaultParams
	}
	if opt.TokenTTL <= 0 {
		opt.TokenTTL = 15 * time.Minute
	}
	if opt.MaxFailures <= 0 {
		opt.MaxFailures = 5
	}
	if opt.FailureWindow <= 0 {
		opt.FailureWindow = 15 * time.Minute
	}
	if opt.LockFor <= 0 {
		opt.LockFor = 15 * time.Minute
	}
	if opt.MaxAddrFailures <= 0 {
		opt.MaxAddrFailures = 20
	}
	if opt.AddrWindow <= 0 {
		opt.AddrWindow = 15 * time.Minute
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxConcurrentHashes <= 0 {
		opt.MaxConcurrentHashes = runtime.GOMAXPROCS(0)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pw, err := GeneratePassword()
	if err != nil {
		return nil, err
	}
	dummy, err := HashPassword(pw, opt.Params)
	if err != nil {
		return nil, err
	}
	return &Users{opt: opt, log: log, dummy: dummy, addrs: newAddrLimiter(opt.MaxAddrFailures, opt.AddrWindow),
		slots: make(chan struct{}, opt.MaxConcurrentHashes)}, nil
}

// hash and verify run argon2id in one of the slots, waiting for one (or ctx).
func (u *Users) hash(ctx context.Context, password string) (string, error) {
	if err := u.acquire(ctx); err != nil {
		return "", err
	}
	defer func() { <-u.slots }()
	return HashPassword(password, u.opt.Params)
}

func (u *Users) verify(ctx context.Context, password, hash string) (ok, rehash bool, err error) {
	if err := u.acquire(ctx); err != nil {
		return false, false, err
	}
	defer func() { <-u.slots }()
	return VerifyPassword(password, hash, u.opt.Params)
}

func (u *Users) acquire(ctx context.Context) error {
	select {
	case u.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TokenTTL is how long a sign-in token lasts.
func (u *Users) TokenTTL() time.Duration { return u.opt.TokenTTL }

// Login checks username and password and returns a new sign-in token, shown only here
// (the store keeps its SHA-256). It refuses with *InputError for malformed input,
// *LockedError while the name or the address is locked out, and ErrBadCredentials
// otherwise. An unknown username costs the same argon2id work as a known one and counts
// towards its lock-out the same way, so neither timing nor lock-outs tell which names
// exist. Every attempt is audited.
func (u *Users) Login(ctx context.Context, username, password, addr string) (token string, expires time.Time, err error) {
	if err := CheckUsername(username); err != nil {
		return "", time.Time{}, err
	}
	if len(password) > MaxPasswordLen || !validText(password) {
		return "", time.Time{}, invalid("password", "The password is too long or holds invalid characters.")
	}
	now := u.opt.Now()
	fail := func(actor, detail string) {
		u.Record(ctx, Event{Actor: actor, Action: "login.failure", Target: actor, ClientAddr: addr, Detail: detail})
	}
	if wait, blocked := u.addrs.blocked(addr, now); blocked {
		fail("", "address locked out")
		return "", time.Time{}, &LockedError{Reason: "address", RetryAfter: seconds(wait)}
	}
	f, err := u.opt.Store.GetFailures(ctx, username)
	if err != nil {
		return "", time.Time{}, err
	}
	if f.LockedUntil.After(now) {
		fail(u.knownName(ctx, username), "username locked out")
		return "", time.Time{}, &LockedError{Reason: "username", RetryAfter: seconds(f.LockedUntil.Sub(now))}
	}
	user, err := u.opt.Store.GetUser(ctx, username)
	known := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", time.Time{}, err
	}
	hash := u.dummy
	if known {
		hash = user.PasswordHash
	}
	ok, rehash, verr := u.verify(ctx, password, hash)
	if ctx.Err() != nil {
		return "", time.Time{}, ctx.Err()
	}
	if verr != nil {
		u.log.Error("admin user has an unreadable password hash; reset it with the CLI", "user", username)
	}
	if !ok || !known {
		u.addrs.fail(addr, now)
		if _, err := u.opt.Store.RecordFailure(ctx, username, now, u.opt.FailureWindow, u.opt.MaxFailures, u.opt.LockFor); err != nil {
			return "", time.Time{}, err
		}
		actor := ""
		if known {
			actor = username // an unknown name may be a password typed in the wrong field: not kept
		}
		fail(actor, "wrong username or password")
		return "", time.Time{}, ErrBadCredentials
	}
	if rehash {
		if h, err := u.hash(ctx, password); err == nil {
			if err := u.opt.Store.RehashPassword(ctx, username, user.PasswordHash, h); err != nil {
				u.log.Warn("admin password not rehashed with the current parameters", "user", username, "err", err)
			}
		}
	}
	if err := u.opt.Store.ClearFailures(ctx, username, now.Add(-24*time.Hour)); err != nil {
		u.log.Warn("failed sign-ins not cleared", "err", err)
	}
	if err := u.opt.Store.DeleteExpiredSessions(ctx, now); err != nil {
		u.log.Warn("expired admin sessions not removed", "err", err)
	}
	token, hashed, err := newToken()
	if err != nil {
		return "", time.Time{}, err
	}
	expires = stamp(now.Add(u.opt.TokenTTL))
	if err := u.opt.Store.CreateSession(ctx, Session{TokenHash: hashed, Username: username, CreatedAt: now, ExpiresAt: expires, ClientAddr: addr}); err != nil {
		return "", time.Time{}, err
	}
	u.Record(ctx, Event{Actor: username, Action: "login.success", Target: username, ClientAddr: addr})
	return token, expires, nil
}

// knownName is name if such a user exists, else "" (so the audit log never keeps what may
// be a password typed into the username field).
func (u *Users) knownName(ctx context.Context, name string) string {
	if _, err := u.opt.Store.GetUser(ctx, name); err == nil {
		return name
	}
	return ""
}

// Authenticate returns the session of a sign-in token, or ErrUnauthorized for anything
// but a current token of this deployment: a malformed one (a JWT, say, whatever its
// "alg"), an unknown one (tampered, or from another database), an expired or ended one.
func (u *Users) Authenticate(ctx context.Context, token string) (Session, error) {
	hash, ok := tokenHash(token)
	if !ok {
		return Session{}, ErrUnauthorized
	}
	s, err := u.opt.Store.GetSession(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		return Session{}, ErrUnauthorized
	}
	if err != nil {
		return Session{}, err
	}
	if subtle.ConstantTimeCompare(s.TokenHash[:], hash[:]) != 1 {
		return Session{}, ErrUnauthorized
	}
	if !u.opt.Now().Before(s.ExpiresAt) {
		if err := u.opt.Store.DeleteSession(ctx, hash); err != nil {
			u.log.Warn("expired admin session not removed", "err", err)
		}
		return Session{}, ErrUnauthorized
	}
	return s, nil
}

// Logout ends the token's session at once, on every replica (the session is a row).
func (u *Users) Logout(ctx context.Context, token string) error {
	hash, ok := tokenHash(token)
	if !ok {
		return ErrUnauthorized
	}
	return u.opt.Store.DeleteSession(ctx, hash)
}

// CreateUser adds an admin user with the password (at least MinPasswordLen bytes).
func (u *Users) CreateUser(ctx context.Context, name, password string) (User, error) {
	if err := CheckUsername(name); err != nil {
		return User{}, err
	}
	if err := checkPassword(password); err != nil {
		return User{}, err
	}
	h, err := u.hash(ctx, password)
	if err != nil {
		return User{}, err
	}
	now := stamp(u.opt.Now())
	user := User{Name: name, PasswordHash: h, CreatedAt: now, UpdatedAt: now}
	if err := u.opt.Store.CreateUser(ctx, user); err != nil {
		return User{}, err
	}
	return user, nil
}

// ListUsers returns every admin user by name.
func (u *Users) ListUsers(ctx context.Context) ([]User, error) { return u.opt.Store.ListUsers(ctx) }

// SetPassword replaces the user's password, ends every session of the user, and lifts a
// lock-out of the name.
func (u *Users) SetPassword(ctx context.Context, name, password string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	h, err := u.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := u.opt.Store.SetPassword(ctx, name, h, u.opt.Now()); err != nil {
		return err
	}
	return u.opt.Store.ClearFailures(ctx, name, u.opt.Now().Add(-24*time.Hour))
}

// DeleteUser removes the user and its sessions; ErrLastUser if it is the only one left.
func (u *Users) DeleteUser(ctx context.Context, name string) error {
	return u.opt.Store.DeleteUser(ctx, name)
}

// Bootstrap creates the first admin user when there is none: with password if given,
// else a generated one, which is returned (and must be shown once). created is false when
// admin users exist already (nothing is changed then).
func (u *Users) Bootstrap(ctx context.Context, name, password string) (generated string, created bool, err error) {
	n, err := u.opt.Store.CountUsers(ctx)
	if err != nil || n > 0 {
		return "", false, err
	}
	if password == "" {
		if password, err = GeneratePassword(); err != nil {
			return "", false, err
		}
		generated = password
	}
	if _, err := u.CreateUser(ctx, name, password); err != nil {
		if errors.Is(err, ErrConflict) { // made meanwhile by another replica
			return "", false, nil
		}
		return "", false, err
	}
	u.Record(ctx, Event{Actor: "bootstrap", Action: "user.create", Target: name})
	return generated, true, nil
}

// Record appends e to the audit log, stamped now. A record that cannot be written is
// logged (it holds no secret) and returned as an error.
func (u *Users) Record(ctx context.Context, e Event) error {
	e.At = u.opt.Now()
	if err := u.opt.Store.AppendAudit(ctx, e); err != nil {
		u.log.Error("admin audit record not written", "actor", e.Actor, "action", e.Action, "target", e.Target,
			"client_addr", e.ClientAddr, "detail", e.Detail, "err", err)
		return err
	}
	return nil
}

// Audit returns at most limit audit events, newest first, with ID below before (0: from
// the newest).
func (u *Users) Audit(ctx context.Context, limit int, before int64) ([]Event, error) {
	return u.opt.Store.ListAudit(ctx, limit, before)
}

// newToken returns a new sign-in token and its SHA-256.
func newToken() (string, [32]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", [32]byte{}, fmt.Errorf("admin: token: %w", err)
	}
	t := TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return t, sha256.Sum256([]byte(t)), nil
}

// tokenHash is the SHA-256 of a well-formed token; ok is false for anything else.
func tokenHash(token string) ([32]byte, bool) {
	if len(token) != tokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return [32]byte{}, false
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(token[len(TokenPrefix):]); err != nil {
		return [32]byte{}, false
	}
	return sha256.Sum256([]byte(token)), true
}

// seconds rounds d up to whole seconds, at least 1.
func seconds(d time.Duration) int { return max(1, int((d+time.Second-1)/time.Second)) }
