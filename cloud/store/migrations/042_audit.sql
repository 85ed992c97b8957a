-- The audit log (version 42): who did what, to which record, when, from where; append-only and hash-chained
-- in the database itself, so neither the services nor a careless owner can change history unnoticed.
--
-- * ft_app may INSERT and SELECT only (cloud.store.tenancy.PRIVILEGES); row-level security (applied by the
--   migrator after every run) gives each tenant its own entries.  tenant_id is NULL for platform events,
--   which only platform scope sees and writes.
-- * A trigger refuses UPDATE, DELETE and TRUNCATE even for the owner, unless the transaction has set
--   ft.audit_maintenance = 'on' (the documented retention procedure, docs/deployment.md "Audit log").
-- * Every entry belongs to one chain: its tenant's, or the platform chain for tenant_id NULL.  The BEFORE
--   INSERT trigger (SECURITY DEFINER, search_path pinned) assigns id and at itself, takes the chain's
--   transaction advisory lock, reads and row-locks the chain's head, and sets
--       prev_hash = the chain's last hash (32 zero bytes for the first entry)
--       hash      = sha256(prev_hash || ft_audit.canonical(entry))
--   so a writer can neither forge nor skip the chain, and concurrent inserts serialise per chain.  The
--   head (ft_audit.chain_heads: last id, last hash, entry count) is what reveals entries removed from the
--   end of a chain; removals and edits elsewhere break the links.  cloud/audit/chain.py recomputes all of
--   it in Python (`fieldtrust cloud audit verify`).
--
-- Schema ft_audit holds what only the owner touches (the heads, the id sequence, the trigger functions):
-- the services have no USAGE on it, and it is outside the tenancy pass, which covers schema ft.
--
-- Canonical bytes of an entry (version 'ft-audit-v1'), reproduced by cloud/audit/chain.py: the
-- concatenation of fields, each field = 4-byte big-endian length || UTF-8 bytes, or ff ff ff ff for NULL:
--     'ft-audit-v1', id (decimal), tenant_id, at (UTC, 'YYYY-MM-DDTHH:MM:SS.ffffffZ'), actor_kind, actor_id,
--     actor_roles (4-byte big-endian count, then each role as a field), action, target_type, target_id,
--     farmer_id, purpose, source_ip (the field holds inet_send(source_ip): family 2|3, mask bits, 0,
--     address length, address bytes), detail (jsonb's canonical text: detail::text).

CREATE SCHEMA ft_audit;
REVOKE ALL ON SCHEMA ft_audit FROM PUBLIC;

CREATE SEQUENCE ft_audit.entry_id AS bigint;

CREATE TABLE ft.audit_log (
    id           bigint PRIMARY KEY,                 -- assigned by the insert trigger, in chain order
    tenant_id    text REFERENCES ft.tenants (id),    -- NULL: a platform event (platform chain)
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),  -- set by the insert trigger
    actor_kind   text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'platform_admin', 'system', 'anonymous')),
    actor_id     text NOT NULL,
    actor_roles  text[] NOT NULL DEFAULT '{}',
    action       text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'),
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    farmer_id    text,                               -- whose data, when it is a farmer's
    purpose      text,                               -- why, for uses of a farmer's data
    source_ip    inet,
    detail       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    prev_hash    bytea NOT NULL,                     -- set by the insert trigger
    hash         bytea NOT NULL                      -- set by the insert trigger
);
CREATE INDEX audit_log_chain ON ft.audit_log (tenant_id, id);
CREATE INDEX audit_log_farmer ON ft.audit_log (tenant_id, farmer_id, id) WHERE farmer_id IS NOT NULL;
CREATE INDEX audit_log_actor ON ft.audit_log (tenant_id, actor_id, id);
CREATE INDEX audit_log_target ON ft.audit_log (tenant_id, target_type, target_id, id);
CREATE INDEX audit_log_at ON ft.audit_log (tenant_id, at);

-- One row per chain: '' is the platform chain, else the tenant id.  base_hash is the prev_hash of the
-- chain's first kept entry: 32 zero bytes until the retention procedure archives a chain's oldest entries.
CREATE TABLE ft_audit.chain_heads (
    chain      text PRIMARY KEY,
    tenant_id  text,
    last_id    bigint,
    last_hash  bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    entries    bigint NOT NULL DEFAULT 0,  -- appended since the chain began
    base_id    bigint,                     -- the last archived entry's id (NULL: nothing archived)
    base_hash  bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    archived   bigint NOT NULL DEFAULT 0   -- entries removed by the retention procedure
);

-- One canonical field: length-prefixed bytes, or ff ff ff ff for NULL.
CREATE FUNCTION ft_audit.field(value bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN value IS NULL THEN '\xffffffff'::bytea ELSE int4send(length(value)) || value END $$;

CREATE FUNCTION ft_audit.field(value text) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT ft_audit.field(convert_to(value, 'UTF8')) $$;

CREATE FUNCTION ft_audit.canonical(e ft.audit_log) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = ft_audit, pg_temp
    AS $$
        SELECT ft_audit.field('ft-audit-v1'::text)
            || ft_audit.field(e.id::text)
            || ft_audit.field(e.tenant_id)
            || ft_audit.field(to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
            || ft_audit.field(e.actor_kind)
            || ft_audit.field(e.actor_id)
            || CASE WHEN e.actor_roles IS NULL THEN '\xffffffff'::bytea
                    ELSE int4send(cardinality(e.actor_roles))
                         || coalesce((SELECT string_agg(ft_audit.field(r), ''::bytea ORDER BY n)
                                      FROM unnest(e.actor_roles) WITH ORDINALITY AS u (r, n)), ''::bytea) END
            || ft_audit.field(e.action)
            || ft_audit.field(e.target_type)
            || ft_audit.field(e.target_id)
            || ft_audit.field(e.farmer_id)
            || ft_audit.field(e.purpose)
            || ft_audit.field(inet_send(e.source_ip))
            || ft_audit.field(e.detail::text)
    $$;

-- The insert trigger: whatever the writer gave for id, at, prev_hash and hash is replaced.
CREATE FUNCTION ft_audit.chain_entry() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ft_audit, pg_temp
    AS $$
DECLARE
    chain_key text := coalesce(NEW.tenant_id, '');
    previous bytea;
BEGIN
    -- one writer per chain at a time, until its transaction ends ("FTAU" is this lock class)
    PERFORM pg_advisory_xact_lock(x'46544155'::int, hashtext(chain_key));
    INSERT INTO ft_audit.chain_heads (chain, tenant_id) VALUES (chain_key, NEW.tenant_id)
        ON CONFLICT (chain) DO NOTHING;
    -- FOR UPDATE: under REPEATABLE READ a head moved since the snapshot fails with a serialization error
    -- (retry) instead of forking the chain; under READ COMMITTED it returns the latest head
    SELECT h.last_hash INTO STRICT previous FROM ft_audit.chain_heads h WHERE h.chain = chain_key FOR UPDATE;
    NEW.id := nextval('ft_audit.entry_id');
    NEW.at := clock_timestamp();
    NEW.actor_roles := coalesce(NEW.actor_roles, '{}');
    NEW.detail := coalesce(NEW.detail, '{}');
    NEW.prev_hash := previous;
    NEW.hash := sha256(previous || ft_audit.canonical(NEW));
    UPDATE ft_audit.chain_heads SET last_id = NEW.id, last_hash = NEW.hash, entries = entries + 1
        WHERE chain = chain_key;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON ft.audit_log
    FOR EACH ROW EXECUTE FUNCTION ft_audit.chain_entry();

-- UPDATE, DELETE and TRUNCATE: refused unless the owner's transaction says it is doing maintenance.
-- (The services cannot get here: they hold no UPDATE, DELETE or TRUNCATE privilege at all.)
CREATE FUNCTION ft_audit.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ft_audit, pg_temp
    AS $$
BEGIN
    IF coalesce(current_setting('ft.audit_maintenance', true), '') = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'ft.audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'retention and archival: the owner procedure in docs/deployment.md ("Audit log")';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON ft.audit_log
    FOR EACH ROW EXECUTE FUNCTION ft_audit.refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ft.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ft_audit.refuse_change();

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ft_audit FROM PUBLIC;
