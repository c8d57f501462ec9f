package admin

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors returned by a Store and by Users. The Handler maps them to HTTP statuses.
var (
	ErrNotFound = errors.New("admin: not found")
	// ErrConflict: an admin user of that name exists.
	ErrConflict = errors.New("admin: already exists")
	// ErrLastUser: removing the user would leave no admin user.
	ErrLastUser = errors.New("admin: the last admin user cannot be removed")
	// ErrUnauthorized: no sign-in token, or one that is unknown, expired or ended.
	ErrUnauthorized = errors.New("admin: not signed in")
	// ErrBadCredentials: the username and password do not match an admin user.
	ErrBadCredentials = errors.New("admin: wrong username or password")
	// ErrUnsupported: a Tenancy that cannot do what was asked (501).
	ErrUnsupported = errors.New("admin: not supported")
)

// LockedError is a sign-in refused because of too many recent failures, for the username or
// for the client address; the client may try again after RetryAfter.
type LockedError struct {
	Reason     string // "username" or "address"
	RetryAfter int    // seconds
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("admin: too many failed sign-ins for this %s; retry in %d s", e.Reason, e.RetryAfter)
}

// InputError is a request field that is refused, with what is wrong with it.
type InputError struct {
	Param   string
	Message string
}

func (e *InputError) Error() string { return "admin: " + e.Param + ": " + e.Message }

func invalid(param, message string) error { return &InputError{Param: param, Message: message} }

// validText reports whether s is valid UTF-8 without control characters (NUL included).
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Bounds of the names the admin API accepts.
const (
	MaxNameLen     = 200 // tenant and key names
	MaxUsernameLen = 64
)

var (
	usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)
	// identRE is a provider config name (the model prefix: no "/"), a provider kind, or an
	// id in a path.
	identRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
)

// CheckUsername refuses what is not a username: 1 to 64 letters, digits and . _ @ -,
// starting with a letter or digit.
func CheckUsername(name string) error {
	if len(name) == 0 || len(name) > MaxUsernameLen || !usernameRE.MatchString(name) {
		return invalid("username", fmt.Sprintf("A username is 1 to %d letters, digits and . _ @ -, starting with a letter or digit.", MaxUsernameLen))
	}
	return nil
}

// checkName refuses a display name (a tenant's or a key's) that is empty, longer than
// MaxNameLen bytes, not UTF-8, holds a control character, is only white space, or holds
// < or > (markup has no place in a name; pages render names as text anyway).
func checkName(param, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return invalid(param, "The name must not be empty.")
	case len(name) > MaxNameLen:
		return invalid(param, fmt.Sprintf("The name must be at most %d bytes long.", MaxNameLen))
	case !validText(name):
		return invalid(param, "The name must be valid UTF-8 without control characters.")
	case strings.ContainsAny(name, "<>"):
		return invalid(param, "The name must not contain < or >.")
	}
	return nil
}

// checkIdent refuses an identifier (an id in a path, a provider name or kind) that is not
// 1 to max letters, digits and . _ : -.
func checkIdent(param, s string, max int) error {
	if len(s) == 0 || len(s) > max || !identRE.MatchString(s) {
		return invalid(param, fmt.Sprintf("%s must be 1 to %d letters, digits and . _ : -.", param, max))
	}
	return nil
}
