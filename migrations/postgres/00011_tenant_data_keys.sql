-- Per-tenant data keys (envelope encryption, package crypto) and the one way trace rows can
-- be deleted: a hard delete of a tenant whose data keys are already destroyed.
--
-- tenant_data_keys holds each tenant's random AES-256 data key, wrapped (AES-256-GCM) by a
-- master key version; the row's version is the key_version of the trace rows and provider
-- keys sealed with it: above 1000000 (crypto.DataKeyVersionBase) a random data key, below
-- it the key the first scheme derived from that master version, stored by
-- crypto.Keyring.AdoptDerivedKeys so old rows open once the master version is removed.
-- Only wrapped keys are here, never a master key. A hard delete turns
-- the tenant's rows into tombstones: wrapped becomes NULL, master_version 0, destroyed_at
-- set; the tombstone keeps a key from ever being created again for that tenant. No foreign
-- key to tenants: the tombstone outlives the tenant.
--
-- Trace rows stay immutable: loom_traces_guard refuses every UPDATE, and every DELETE but
-- one made inside a transaction that has set
--
--     SELECT set_config('loom.tenant_delete', '<tenant id>', true)   -- SET LOCAL
--
-- of a row of that tenant, when that tenant's data keys are destroyed (a tombstone here).
-- Only tenancy's hard delete does that (after committing the tombstone), so a trace row
-- leaves either that way, unreadable already, or with its whole monthly partition. The
-- setting is a guard against mistakes, not access control: privileges are.

-- +goose Up
CREATE TABLE tenant_data_keys (
    tenant_id      text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    master_version integer     NOT NULL CHECK (master_version >= 0),
    wrapped        bytea       NULL,
    created_at     timestamptz NOT NULL,
    destroyed_at   timestamptz NULL,
    PRIMARY KEY (tenant_id, version),
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL)),
    CHECK ((master_version = 0) = (destroyed_at IS NOT NULL))
);

-- +goose StatementBegin
CREATE FUNCTION loom_traces_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.tenant_id = current_setting('loom.tenant_delete', true)
       AND EXISTS (SELECT 1 FROM tenant_data_keys k
                   WHERE k.tenant_id = OLD.tenant_id AND k.destroyed_at IS NOT NULL) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'traces are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'retention is by dropping a whole monthly partition (DROP TABLE traces_yYYYYmMM); a tenant''s rows go with its hard delete';
END
$$;
-- +goose StatementEnd

-- Dropping the row trigger on the parent drops its clones; creating it clones it again.
DROP TRIGGER traces_immutable_rows ON traces;
CREATE TRIGGER traces_immutable_rows
    BEFORE UPDATE OR DELETE ON traces
    FOR EACH ROW EXECUTE FUNCTION loom_traces_guard();

-- +goose Down
DROP TRIGGER traces_immutable_rows ON traces;
CREATE TRIGGER traces_immutable_rows
    BEFORE UPDATE OR DELETE ON traces
    FOR EACH ROW EXECUTE FUNCTION loom_traces_immutable();
DROP FUNCTION loom_traces_guard();
DROP TABLE tenant_data_keys;
