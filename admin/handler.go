package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/tenancy"
)

// Tenancy is what the admin API manages tenants, keys and provider configurations
// through: *tenancy.Service bound to the serving gateway's caches, so a revocation or a
// deactivation applies to the gateway's next request.
type Tenancy interface {
	CreateTenant(ctx context.Context, name string) (tenancy.Tenant, error)
	GetTenant(ctx context.Context, id string) (tenancy.Tenant, error)
	ListTenantSummaries(ctx context.Context) ([]tenancy.TenantSummary, error)
	RenameTenant(ctx context.Context, id, name string) error
	SetTenantStatus(ctx context.Context, id, status string) error
	// DeleteTenant hard-deletes the tenant: its data key, keys, provider configs, traces.
	DeleteTenant(ctx context.Context, id string) error

	CreateKey(ctx context.Context, tenantID, name string) (raw string, key tenancy.APIKey, err error)
	ListKeys(ctx context.Context, tenantID string) ([]tenancy.APIKey, error)
	RevokeKey(ctx context.Context, tenantID, keyID string) error

	// PutProviderConfig seals apiKey (empty: none) and stores the config.
	PutProviderConfig(ctx context.Context, c tenancy.ProviderConfig, apiKey string) error
	ListProviderConfigs(ctx context.Context, tenantID string) ([]tenancy.ProviderConfig, error)
	DeleteProviderConfig(ctx context.Context, tenantID, name string) error
}

// Options configures a Handler.
type Options struct {
	// Users signs admins in and keeps the audit log. Required.
	Users *Users
	// Tenancy manages tenants. Required.
	Tenancy Tenancy
	// Spender answers GET /admin/spend. If nil, that route answers 501.
	Spender analytics.Spender
	// ClientAddr names the client of a request for throttling and the audit log. If nil,
	// the host of r.RemoteAddr: behind a proxy, give a func that trusts its header.
	ClientAddr func(r *http.Request) string
	// MaxBodyBytes bounds a request body (413 beyond). If zero, 2 MiB.
	MaxBodyBytes int64
	// Logger receives internal errors. If nil, nothing is logged.
	Logger *slog.Logger
}

// Handler serves the admin API under /admin/. Every route but POST /admin/login needs
// "Authorization: Bearer <token>" from a sign-in; answers are JSON, errors OpenAI-style.
type Handler struct {
	opt Options
	log *slog.Logger
	mux *http.ServeMux
}

// NewHandler returns a Handler for opt.
func NewHandler(opt Options) (*Handler, error) {
	if opt.Users == nil || opt.Tenancy == nil {
		return nil, errors.New("admin: Options needs Users and Tenancy")
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 2 << 20
	}
	if opt.ClientAddr == nil {
		opt.ClientAddr = remoteHost
	}
	h := &Handler{opt: opt, log: opt.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	m := h.mux
	m.HandleFunc("POST /admin/login", h.login)
	m.HandleFunc("POST /admin/logout", h.authed(h.logout))
	m.HandleFunc("GET /admin/users", h.authed(h.listUsers))
	m.HandleFunc("POST /admin/users", h.authed(h.createUser))
	m.HandleFunc("PUT /admin/users/{name}/password", h.authed(h.setPassword))
	m.HandleFunc("DELETE /admin/users/{name}", h.authed(h.deleteUser))
	m.HandleFunc("GET /admin/tenants", h.authed(h.listTenants))
	m.HandleFunc("POST /admin/tenants", h.authed(h.createTenant))
	m.HandleFunc("GET /admin/tenants/{id}", h.authed(h.getTenant))
	m.HandleFunc("PATCH /admin/tenants/{id}", h.authed(h.patchTenant))
	m.HandleFunc("DELETE /admin/tenants/{id}", h.authed(h.deleteTenant))
	m.HandleFunc("GET /admin/tenants/{id}/keys", h.authed(h.listKeys))
	m.HandleFunc("POST /admin/tenants/{id}/keys", h.authed(h.createKey))
	m.HandleFunc("POST /admin/tenants/{id}/keys/{key_id}/revoke", h.authed(h.revokeKey))
	m.HandleFunc("GET /admin/tenants/{id}/providers", h.authed(h.listProviders))
	m.HandleFunc("PUT /admin/tenants/{id}/providers/{name}", h.authed(h.putProvider))
	m.HandleFunc("DELETE /admin/tenants/{id}/providers/{name}", h.authed(h.deleteProvider))
	m.HandleFunc("GET /admin/spend", h.authed(h.spend))
	m.HandleFunc("GET /admin/audit", h.authed(h.audit))
	m.HandleFunc("/admin/", h.notFound)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// notFound answers a path no route serves (404) or a method a path is not served with
// (405, with Allow).
func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/admin/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "",
			r.Method+" is not allowed here; use "+strings.Join(allow, " or ")+".")
		return
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "", "Unknown admin URL.")
}

// who is the signed-in admin and the request's client address.
type who struct {
	user, addr, token string
}

// authed wraps next with the sign-in check.
func (h *Handler) authed(next func(http.ResponseWriter, *http.Request, who)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			h.fail(w, r, ErrUnauthorized)
			return
		}
		s, err := h.opt.Users.Authenticate(r.Context(), token)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		next(w, r, who{user: s.Username, addr: h.opt.ClientAddr(r), token: token})
	}
}

func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// record audits an action of the signed-in admin.
func (h *Handler) record(r *http.Request, u who, action, target, detail string) {
	h.opt.Users.Record(r.Context(), Event{Actor: u.user, Action: action, Target: target, ClientAddr: u.addr, Detail: detail})
}

// decode reads the JSON body into v: at most MaxBodyBytes (413), valid UTF-8 (invalid
// bytes would otherwise be replaced silently), one object, no unknown fields.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opt.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "",
			"The request body is larger than "+strconv.FormatInt(h.opt.MaxBodyBytes, 10)+" bytes.")
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_body", "", "The request body could not be read.")
		return false
	case !utf8.Valid(body):
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_body", "", "The request body is not valid UTF-8.")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", "The request body is not the JSON object this route takes: "+jsonProblem(err))
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", "The request body holds more than one JSON value.")
		return false
	}
	return true
}

// jsonProblem says what is wrong with a body without echoing its content.
func jsonProblem(err error) string {
	var typ *json.UnmarshalTypeError
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &typ):
		return "field " + strconv.Quote(typ.Field) + " has the wrong type."
	case errors.As(err, &syn):
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10) + "."
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if len(f) > 70 || !validText(f) {
			return "an unknown field."
		}
		return "unknown field " + f + "."
	case errors.Is(err, io.EOF):
		return "the body is empty."
	}
	return "malformed JSON."
}

// writeJSON sends v with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "", "", "The answer could not be encoded.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError sends an OpenAI-style error: {"error":{"message","type","param","code"}}.
func writeError(w http.ResponseWriter, status int, typ, code, param, message string) {
	b := provider.ErrorJSON(message, typ, param, code)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// fail maps err to its answer; internal errors are logged, never sent.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var in *InputError
	var locked *LockedError
	switch {
	case errors.As(err, &in):
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_parameter", in.Param, in.Message)
	case errors.As(err, &locked):
		w.Header().Set("Retry-After", strconv.Itoa(locked.RetryAfter))
		writeError(w, http.StatusTooManyRequests, "rate_limit_error", "too_many_failed_logins", "",
			"Too many failed sign-ins for this "+locked.Reason+"; retry in "+strconv.Itoa(locked.RetryAfter)+" seconds.")
	case errors.Is(err, ErrUnauthorized):
		w.Header().Set("WWW-Authenticate", `Bearer realm="loom-admin"`)
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_admin_token", "",
			"Sign in with POST /admin/login and send the token as Authorization: Bearer <token>.")
	case errors.Is(err, ErrBadCredentials):
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_credentials", "", "Wrong username or password.")
	case errors.Is(err, ErrLastUser):
		writeError(w, http.StatusConflict, "invalid_request_error", "last_admin_user", "", "The last admin user cannot be removed.")
	case errors.Is(err, ErrConflict), errors.Is(err, tenancy.ErrConflict):
		writeError(w, http.StatusConflict, "invalid_request_error", "already_exists", "", "It already exists.")
	case errors.Is(err, ErrNotFound), errors.Is(err, tenancy.ErrNotFound):
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "", "No such "+what(r)+".")
	case errors.Is(err, tenancy.ErrInvalidInput):
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_parameter", "",
			"The request was refused: "+strings.TrimPrefix(excerpt(err.Error()), "tenancy: "))
	case errors.Is(err, ErrUnsupported):
		writeError(w, http.StatusNotImplemented, "server_error", "not_implemented", "", "This gateway cannot do that.")
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "client_closed_request", "", "", "The client closed the request.")
	default:
		h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "server_error", "unavailable", "", "The request could not be completed; retry shortly.")
	}
}

// what names the thing a path is about, for a 404's message.
func what(r *http.Request) string {
	switch {
	case r.PathValue("key_id") != "":
		return "API key"
	case r.PathValue("name") != "" && strings.Contains(r.URL.Path, "/providers/"):
		return "provider configuration"
	case r.PathValue("name") != "":
		return "admin user"
	}
	return "tenant"
}

// excerpt bounds an error message passed on.
func excerpt(s string) string {
	if len(s) > 300 {
		s = s[:300]
	}
	return strings.ToValidUTF8(s, "")
}
