-- upstream_retries: how often the upstream request was sent again on a new connection
-- (only where the upstream cannot have acted on the first copy; see provider.Transport).

-- +goose Up
ALTER TABLE traces ADD COLUMN upstream_retries INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE traces DROP COLUMN upstream_retries;
