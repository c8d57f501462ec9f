package admin

import (
	"net/http"
	"time"
)

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginAnswer struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Username  string    `json:"username"`
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !h.decode(w, r, &req) {
		return
	}
	token, expires, err := h.opt.Users.Login(r.Context(), req.Username, req.Password, h.opt.ClientAddr(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, loginAnswer{Token: token, ExpiresAt: expires, Username: req.Username})
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, u who) {
	if err := h.opt.Users.Logout(r.Context(), u.token); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "logout", u.user, "")
	w.WriteHeader(http.StatusNoContent)
}

// userJSON is an admin user as the API shows it: never its hash.
type userJSON struct {
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type list[T any] struct {
	Object string `json:"object"` // "list"
	Data   []T    `json:"data"`
}

func newList[T any](data []T) list[T] {
	if data == nil {
		data = []T{}
	}
	return list[T]{Object: "list", Data: data}
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request, u who) {
	us, err := h.opt.Users.ListUsers(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]userJSON, len(us))
	for i, x := range us {
		out[i] = userJSON{Username: x.Name, CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt}
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request, u who) {
	var req loginRequest
	if !h.decode(w, r, &req) {
		return
	}
	x, err := h.opt.Users.CreateUser(r.Context(), req.Username, req.Password)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "user.create", x.Name, "")
	writeJSON(w, http.StatusCreated, userJSON{Username: x.Name, CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt})
}

func (h *Handler) setPassword(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := CheckUsername(name); err != nil {
		h.fail(w, r, err)
		return
	}
	var req struct {
		Password string `json:"password"`
	}
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.opt.Users.SetPassword(r.Context(), name, req.Password); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "user.password", name, "sessions of the user ended")
	writeJSON(w, http.StatusOK, map[string]any{"username": name, "password_changed": true})
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := CheckUsername(name); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.opt.Users.DeleteUser(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, u, "user.delete", name, "")
	writeJSON(w, http.StatusOK, map[string]any{"username": name, "deleted": true})
}
