-- Indexes for the analytics API's trace list (analytics.SQLiteStore): a page is
--
--     WHERE tenant_id = $1 [AND model = $2] AND (created_at, id) < ($3, $4)
--     ORDER BY created_at DESC, id DESC LIMIT n
--
-- which these serve fully, scanned backwards: no sort, no row read beyond the page, also
-- when many traces share one created_at. They replace (tenant_id, created_at) and
-- (tenant_id, model), of which they are extensions, so writes keep the same number of
-- indexes.

-- +goose Up
CREATE INDEX traces_tenant_created_id ON traces (tenant_id, created_at, id);
CREATE INDEX traces_tenant_model_created_id ON traces (tenant_id, model, created_at, id);
DROP INDEX traces_tenant_created_at;
DROP INDEX traces_tenant_model;

-- +goose Down
CREATE INDEX traces_tenant_created_at ON traces (tenant_id, created_at);
CREATE INDEX traces_tenant_model ON traces (tenant_id, model);
DROP INDEX traces_tenant_model_created_id;
DROP INDEX traces_tenant_created_id;
