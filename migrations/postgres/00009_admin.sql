-- Admin users, their sign-in sessions, failed sign-in counts and the admin audit log.
--
-- Passwords are argon2id PHC strings (parameters included); sessions are kept only as the
-- SHA-256 of their token. admin_login_failures counts failures per attempted username,
-- existing or not, so a lock-out holds across replicas and restarts and does not tell which
-- names exist.
--
-- admin_audit is append-only: triggers refuse UPDATE, DELETE and TRUNCATE, as for traces.
-- They stop mistakes and ordinary roles, not a superuser who disables triggers.

-- +goose Up
CREATE TABLE admin_users (
    name          text        PRIMARY KEY,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash  bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    username    text        NOT NULL REFERENCES admin_users (name) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    client_addr text        NOT NULL DEFAULT ''
);

CREATE INDEX admin_sessions_username ON admin_sessions (username);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);

CREATE TABLE admin_login_failures (
    username     text        PRIMARY KEY,
    failures     integer     NOT NULL,
    last_failure timestamptz NOT NULL,
    locked_until timestamptz NULL
);

CREATE INDEX admin_login_failures_last ON admin_login_failures (last_failure);

CREATE TABLE admin_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text        NOT NULL,
    client_addr text        NOT NULL,
    detail      text        NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION loom_admin_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER admin_audit_append_only_rows
    BEFORE UPDATE OR DELETE ON admin_audit
    FOR EACH ROW EXECUTE FUNCTION loom_admin_audit_append_only();

CREATE TRIGGER admin_audit_no_truncate
    BEFORE TRUNCATE ON admin_audit
    FOR EACH STATEMENT EXECUTE FUNCTION loom_admin_audit_append_only();

-- +goose Down
DROP TABLE admin_audit;
DROP FUNCTION loom_admin_audit_append_only();
DROP TABLE admin_login_failures;
DROP TABLE admin_sessions;
DROP TABLE admin_users;
