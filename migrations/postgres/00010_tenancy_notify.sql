-- The last four characters of a provider config's upstream key, for display, and change
-- notifications: every committed write to tenants, api_keys and provider_configs that
-- changes what a gateway caches is announced on the channel loom_tenancy, whichever
-- process made it (a gateway, the admin CLI, psql), so every replica can drop its cached
-- answers at once. The payload is JSON: {"t":"key","tenant":…,"key":…},
-- {"t":"key_new"}, {"t":"tenant","tenant":…}, {"t":"providers","tenant":…} or
-- {"t":"all"} (a truncate, or ids too long for a notification).

-- +goose Up
ALTER TABLE provider_configs ADD COLUMN key_last4 text NOT NULL DEFAULT '';

-- +goose StatementBegin
CREATE FUNCTION loom_notify(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- A notification payload must be under 8000 bytes: for ids that long (no id Loom
    -- makes is), tell listeners to drop everything instead.
    IF octet_length(payload::text) > 7000 THEN
        payload := '{"t":"all"}';
    END IF;
    PERFORM pg_notify('loom_tenancy', payload::text);
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION loom_notify_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM loom_notify('{"t":"key_new"}');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM loom_notify(jsonb_build_object('t', 'key', 'tenant', OLD.tenant_id, 'key', OLD.id));
    ELSE
        PERFORM loom_notify(jsonb_build_object('t', 'key', 'tenant', OLD.tenant_id, 'key', OLD.id));
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            PERFORM loom_notify(jsonb_build_object('t', 'key', 'tenant', NEW.tenant_id, 'key', NEW.id));
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION loom_notify_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM loom_notify(jsonb_build_object('t', 'tenant', 'tenant', OLD.id));
    ELSE
        PERFORM loom_notify(jsonb_build_object('t', 'tenant', 'tenant', OLD.id));
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            PERFORM loom_notify(jsonb_build_object('t', 'tenant', 'tenant', NEW.id));
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION loom_notify_provider_configs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM loom_notify(jsonb_build_object('t', 'providers', 'tenant', OLD.tenant_id));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM loom_notify(jsonb_build_object('t', 'providers', 'tenant', NEW.tenant_id));
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION loom_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM loom_notify('{"t":"all"}');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- Writing last_used_at (batched every KeyUsageInterval) and renaming a key change nothing
-- a gateway caches: they are not announced.
CREATE TRIGGER api_keys_notify_insert AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION loom_notify_api_keys();
CREATE TRIGGER api_keys_notify_update AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.key_hash IS DISTINCT FROM NEW.key_hash
                       OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION loom_notify_api_keys();
CREATE TRIGGER api_keys_notify_delete AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION loom_notify_api_keys();
CREATE TRIGGER tenants_notify_update AFTER UPDATE ON tenants
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.name IS DISTINCT FROM NEW.name
                       OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION loom_notify_tenants();
CREATE TRIGGER tenants_notify_delete AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION loom_notify_tenants();
CREATE TRIGGER provider_configs_notify AFTER INSERT OR UPDATE OR DELETE ON provider_configs
    FOR EACH ROW EXECUTE FUNCTION loom_notify_provider_configs();
CREATE TRIGGER api_keys_notify_truncate AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION loom_notify_all();
CREATE TRIGGER tenants_notify_truncate AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION loom_notify_all();
CREATE TRIGGER provider_configs_notify_truncate AFTER TRUNCATE ON provider_configs
    FOR EACH STATEMENT EXECUTE FUNCTION loom_notify_all();

-- +goose Down
DROP TRIGGER provider_configs_notify_truncate ON provider_configs;
DROP TRIGGER tenants_notify_truncate ON tenants;
DROP TRIGGER api_keys_notify_truncate ON api_keys;
DROP TRIGGER provider_configs_notify ON provider_configs;
DROP TRIGGER tenants_notify_delete ON tenants;
DROP TRIGGER tenants_notify_update ON tenants;
DROP TRIGGER api_keys_notify_delete ON api_keys;
DROP TRIGGER api_keys_notify_update ON api_keys;
DROP TRIGGER api_keys_notify_insert ON api_keys;
DROP FUNCTION loom_notify_all();
DROP FUNCTION loom_notify_provider_configs();
DROP FUNCTION loom_notify_tenants();
DROP FUNCTION loom_notify_api_keys();
DROP FUNCTION loom_notify(jsonb);
ALTER TABLE provider_configs DROP COLUMN key_last4;
