-- Tenants, their API keys and their provider configurations.
-- Times are INTEGER unix microseconds (UTC), the precision PostgreSQL keeps.

-- +goose Up
CREATE TABLE tenants (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created_at INTEGER NOT NULL
) STRICT;

-- Only the SHA-256 of a key is stored; the raw key is shown once, at creation.
CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    status       TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER NULL,
    last_used_at INTEGER NULL,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
) STRICT;

CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at);

-- sealed_api_key is sealed by package crypto before it reaches the database; models is a
-- JSON array of strings (empty: any model).
CREATE TABLE provider_configs (
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    base_url       TEXT    NOT NULL DEFAULT '',
    sealed_api_key BLOB    NULL,
    key_version    INTEGER NOT NULL DEFAULT 0,
    api_version    TEXT    NOT NULL DEFAULT '',
    models         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(models) AND json_type(models) = 'array'),
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- +goose Down
DROP TABLE provider_configs;
DROP TABLE api_keys;
DROP TABLE tenants;
