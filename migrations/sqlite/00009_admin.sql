-- Admin users, their sign-in sessions, failed sign-in counts and the admin audit log.
-- Times are INTEGER unix microseconds (UTC). See the PostgreSQL migration of the same
-- number for what each table is for. admin_audit is append-only: triggers refuse UPDATE
-- and DELETE.

-- +goose Up
CREATE TABLE admin_users (
    name          TEXT    PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE admin_sessions (
    token_hash  BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    username    TEXT    NOT NULL REFERENCES admin_users (name) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    client_addr TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX admin_sessions_username ON admin_sessions (username);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);

CREATE TABLE admin_login_failures (
    username     TEXT    PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NULL
) STRICT;

CREATE INDEX admin_login_failures_last ON admin_login_failures (last_failure);

CREATE TABLE admin_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    client_addr TEXT    NOT NULL,
    detail      TEXT    NOT NULL
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER admin_audit_no_update BEFORE UPDATE ON admin_audit
BEGIN
    SELECT RAISE(ABORT, 'admin_audit is append-only: UPDATE refused');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER admin_audit_no_delete BEFORE DELETE ON admin_audit
BEGIN
    SELECT RAISE(ABORT, 'admin_audit is append-only: DELETE refused');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER admin_audit_no_delete;
DROP TRIGGER admin_audit_no_update;
DROP TABLE admin_audit;
DROP TABLE admin_login_failures;
DROP TABLE admin_sessions;
DROP TABLE admin_users;
