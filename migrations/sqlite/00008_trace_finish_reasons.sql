-- finish_reasons (see the PostgreSQL migration of the same number), as a JSON array of
-- strings: '[]' when no choice finished, and for rows written before this migration.

-- +goose Up
ALTER TABLE traces ADD COLUMN finish_reasons TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(finish_reasons));

-- +goose Down
ALTER TABLE traces DROP COLUMN finish_reasons;
