-- The usage in full: how an estimate was counted, Anthropic's cache writes by lifetime,
-- OpenAI's audio and predicted-output tokens, and the service tier that served the request,
-- so a trace's cost can be checked against the provider's invoice line by line.
-- Rows written before this migration read as 0 / ''.

-- +goose Up
ALTER TABLE traces
    ADD COLUMN usage_method               text   NOT NULL DEFAULT '', -- how an estimate was counted; '' when reported
    ADD COLUMN cache_write_5m_tokens      bigint NOT NULL DEFAULT 0,  -- subset of prompt_tokens
    ADD COLUMN cache_write_1h_tokens      bigint NOT NULL DEFAULT 0,  -- subset of prompt_tokens
    ADD COLUMN audio_prompt_tokens        bigint NOT NULL DEFAULT 0,  -- subset of prompt_tokens
    ADD COLUMN audio_completion_tokens    bigint NOT NULL DEFAULT 0,  -- subset of completion_tokens
    ADD COLUMN accepted_prediction_tokens bigint NOT NULL DEFAULT 0,  -- subset of completion_tokens
    ADD COLUMN rejected_prediction_tokens bigint NOT NULL DEFAULT 0,  -- subset of completion_tokens
    ADD COLUMN service_tier               text   NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE traces
    DROP COLUMN usage_method,
    DROP COLUMN cache_write_5m_tokens,
    DROP COLUMN cache_write_1h_tokens,
    DROP COLUMN audio_prompt_tokens,
    DROP COLUMN audio_completion_tokens,
    DROP COLUMN accepted_prediction_tokens,
    DROP COLUMN rejected_prediction_tokens,
    DROP COLUMN service_tier;
