-- Tenants, their API keys and their provider configurations.

-- +goose Up
CREATE TABLE tenants (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    status     text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; the raw key is shown once, at creation.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz NULL,
    last_used_at timestamptz NULL,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at);

-- sealed_api_key is sealed by package crypto before it reaches the database; models is a
-- JSON array of strings (empty: any model).
CREATE TABLE provider_configs (
    tenant_id      text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text        NOT NULL,
    kind           text        NOT NULL,
    base_url       text        NOT NULL DEFAULT '',
    sealed_api_key bytea       NULL,
    key_version    integer     NOT NULL DEFAULT 0,
    api_version    text        NOT NULL DEFAULT '',
    models         jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(models) = 'array'),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- +goose Down
DROP TABLE provider_configs;
DROP TABLE api_keys;
DROP TABLE tenants;
