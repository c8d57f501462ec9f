-- finish_reasons: why the upstream stopped generating, as the OpenAI format says it
-- ('stop', 'length', 'tool_calls', 'content_filter'; Anthropic's stop_reason mapped onto
-- these), each reason once, in the order of the choices that finished with it. Empty when
-- no choice finished (an error, a stream cut short), and for rows written before this
-- migration.

-- +goose Up
ALTER TABLE traces ADD COLUMN finish_reasons text[] NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE traces DROP COLUMN finish_reasons;
