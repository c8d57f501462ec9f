-- The last four characters of a provider config's upstream key, for display. (SQLite is
-- single-process: the change notifications of the PostgreSQL schema have no equivalent
-- here.)

-- +goose Up
ALTER TABLE provider_configs ADD COLUMN key_last4 TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE provider_configs DROP COLUMN key_last4;
