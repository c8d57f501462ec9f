-- fields_cut: the pipeline changed a text field of the trace to make it storable (cut to
-- its maximum length, or NUL / invalid UTF-8 replaced with U+FFFD; see tracing.Trace.FieldsCut).
-- Adding a column with a constant default rewrites nothing, in the parent or any partition.

-- +goose Up
ALTER TABLE traces ADD COLUMN fields_cut boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE traces DROP COLUMN fields_cut;
