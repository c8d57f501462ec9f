-- fields_cut: the pipeline changed a text field of the trace to make it storable (cut to
-- its maximum length, or NUL / invalid UTF-8 replaced with U+FFFD; see tracing.Trace.FieldsCut).

-- +goose Up
ALTER TABLE traces ADD COLUMN fields_cut INTEGER NOT NULL DEFAULT 0; -- 0 or 1

-- +goose Down
ALTER TABLE traces DROP COLUMN fields_cut;
