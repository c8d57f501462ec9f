-- Traces: the audit record, one immutable row per request.
--
-- traces is partitioned by month on created_at (UTC month boundaries), one partition
-- traces_yYYYYmMM per month, created by loom_ensure_trace_partition. The PostgreSQL sink
-- (tracing.PostgresSink) calls it for the current and next month, and for the month of every
-- trace it writes, inside the batch's transaction, so no write ever fails for lack of a
-- partition. There is no default partition: a row outside every partition is an error, never
-- a silent catch-all that would have to be split later.
--
-- Rows are immutable: triggers refuse UPDATE, DELETE and TRUNCATE (on the parent and on every
-- partition). Retention is only by dropping a whole monthly partition:
--
--     DROP TABLE traces_y2025m01;
--
-- (or ALTER TABLE traces DETACH PARTITION traces_y2025m01 first, to archive it). Deleting a
-- tenant does not delete its rows: its key material is destroyed (crypto-shredding), and the
-- rows go when their month is dropped. The triggers stop mistakes and ordinary roles, not a
-- superuser, who can disable triggers; tamper evidence is the audit ledger's job.
--
-- No foreign key to tenants: traces outlive soft-deleted tenants, and are removed separately.

-- +goose Up
CREATE TABLE traces (
    id                 uuid        NOT NULL, -- time-ordered UUIDv7, chosen before the trace is queued
    created_at         timestamptz NOT NULL, -- when the request arrived; the partition key
    tenant_id          text        NOT NULL,
    api_key_id         text        NOT NULL,
    request_id         text        NOT NULL, -- the client's X-Request-Id, '' if none
    model              text        NOT NULL, -- as the client asked for it
    served_model       text        NOT NULL, -- as the upstream reported it
    provider           text        NOT NULL,
    stream             boolean     NOT NULL,
    status             integer     NOT NULL, -- HTTP status sent to the client
    error_type         text        NOT NULL, -- OpenAI error type, '' on success
    client_aborted     boolean     NOT NULL,
    prompt_tokens      bigint      NOT NULL,
    completion_tokens  bigint      NOT NULL,
    cached_tokens      bigint      NOT NULL, -- subset of prompt_tokens
    reasoning_tokens   bigint      NOT NULL, -- subset of completion_tokens
    usage_source       text        NOT NULL, -- reported | estimated | missing
    cost_micro_usd     bigint,               -- millionths of a USD; NULL when the model has no price
    price_version      text        NOT NULL,
    latency_us         bigint      NOT NULL,
    ttfb_us            bigint      NOT NULL,
    overhead_us        bigint      NOT NULL,
    response_truncated boolean     NOT NULL,
    request_sealed     bytea,                -- AES-256-GCM ciphertext; NULL when there is no body
    response_sealed    bytea,
    key_version        integer     NOT NULL, -- master key version the bodies were sealed with
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- Ciphertext does not compress: never try (EXTERNAL = out of line when large, uncompressed).
-- Partitions created later copy this setting from the parent.
ALTER TABLE traces ALTER COLUMN request_sealed SET STORAGE EXTERNAL;
ALTER TABLE traces ALTER COLUMN response_sealed SET STORAGE EXTERNAL;

CREATE INDEX traces_tenant_created_at ON traces (tenant_id, created_at);
CREATE INDEX traces_tenant_model ON traces (tenant_id, model);
CREATE INDEX traces_created_at ON traces (created_at);

-- +goose StatementBegin
CREATE FUNCTION loom_traces_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'traces are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'retention is by dropping a whole monthly partition (DROP TABLE traces_yYYYYmMM)';
END
$$;
-- +goose StatementEnd

-- A row trigger on the partitioned parent is cloned onto every partition, present and future.
CREATE TRIGGER traces_immutable_rows
    BEFORE UPDATE OR DELETE ON traces
    FOR EACH ROW EXECUTE FUNCTION loom_traces_immutable();

-- Statement triggers are not cloned, so loom_ensure_trace_partition adds this one to each
-- partition too (TRUNCATE traces_y2026m01 must fail as well).
CREATE TRIGGER traces_no_truncate
    BEFORE TRUNCATE ON traces
    FOR EACH STATEMENT EXECUTE FUNCTION loom_traces_immutable();

-- loom_ensure_trace_partition creates the partition holding the UTC month of month, if it
-- does not exist yet, and returns its name. It is cheap when the partition exists (a catalog
-- lookup, no lock on traces), and safe to run concurrently from several replicas: creators
-- serialise on a transaction-scoped advisory lock taken before any lock on traces.
-- +goose StatementBegin
CREATE FUNCTION loom_ensure_trace_partition(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    first  date := date_trunc('month', month::timestamp)::date;
    schema text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = 'traces'::regclass);
    name   text := 'traces_y' || to_char(first, 'YYYY') || 'm' || to_char(first, 'MM');
BEGIN
    IF to_regclass(format('%I.%I', schema, name)) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('loom_ensure_trace_partition'));
    -- Another session may have created it while we waited. Ask pg_class with a fresh
    -- snapshot: to_regclass reads the relation cache, which can still miss it here.
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = schema AND c.relname = name) THEN
        RETURN name;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.traces FOR VALUES FROM (%L) TO (%L)',
            schema, name, schema,
            first::timestamp AT TIME ZONE 'UTC',
            (first + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER traces_no_truncate BEFORE TRUNCATE ON %I.%I
            FOR EACH STATEMENT EXECUTE FUNCTION loom_traces_immutable()', schema, name);
    EXCEPTION WHEN duplicate_table THEN
        NULL; -- created meanwhile by a session not seen above (REPEATABLE READ snapshot)
    END;
    RETURN name;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- Dropping traces drops every partition with it.
DROP TABLE traces;
DROP FUNCTION loom_ensure_trace_partition(date);
DROP FUNCTION loom_traces_immutable();
