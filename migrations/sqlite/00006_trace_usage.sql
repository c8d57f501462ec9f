-- The usage in full (see the PostgreSQL migration of the same number). Rows written before
-- this migration read as 0 / ''.

-- +goose Up
ALTER TABLE traces ADD COLUMN usage_method               TEXT    NOT NULL DEFAULT '';
ALTER TABLE traces ADD COLUMN cache_write_5m_tokens      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN cache_write_1h_tokens      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN audio_prompt_tokens        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN audio_completion_tokens    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN accepted_prediction_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN rejected_prediction_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN service_tier               TEXT    NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE traces DROP COLUMN usage_method;
ALTER TABLE traces DROP COLUMN cache_write_5m_tokens;
ALTER TABLE traces DROP COLUMN cache_write_1h_tokens;
ALTER TABLE traces DROP COLUMN audio_prompt_tokens;
ALTER TABLE traces DROP COLUMN audio_completion_tokens;
ALTER TABLE traces DROP COLUMN accepted_prediction_tokens;
ALTER TABLE traces DROP COLUMN rejected_prediction_tokens;
ALTER TABLE traces DROP COLUMN service_tier;
