-- Tenant isolation in PostgreSQL itself (version 40): the services' login role, the two functions the
-- row-level security policies are written with, the tenant-filtering views over the rollups, and the one
-- DDL a service may cause (a day partition of ft.readings).
--
-- The policies and grants themselves are applied by cloud.store.tenancy after every migration run, so a
-- table that a later migration creates is covered without being named here (see that module).
--
-- ft_app is the role every service logs in as (API, ingest workers, downlink publisher):
-- NOSUPERUSER and NOBYPASSRLS (row-level security applies to it), owns no table.  Roles are
-- cluster-wide: it may exist already (created by the migration of another database on the same server,
-- or beforehand by an administrator, which is how production does it when the migrating role lacks
-- CREATEROLE).  No password here: development trusts local connections; production sets one with
-- ALTER ROLE ft_app PASSWORD '...' (docs/deployment.md, "Tenant isolation").
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ft_app') THEN
        BEGIN
            CREATE ROLE ft_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created at the same moment by the migration of another database on this server
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role ft_app does not exist and % may not create it', current_user
                    USING HINT = 'create it once as an administrator: CREATE ROLE ft_app LOGIN NOSUPERUSER '
                                 'NOBYPASSRLS NOCREATEDB NOCREATEROLE';
        END;
    END IF;
    -- a role found with more power than a service needs is brought back to what isolation assumes
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ft_app'
               AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole OR NOT rolcanlogin)) THEN
        ALTER ROLE ft_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

-- The scope of the current transaction, set by cloud.store.scope with set_config(..., true):
-- ft.tenant = a tenant id, or ft.scope = 'platform' for trusted platform services (the ingest, the
-- platform admin).  Unset (a fresh transaction of a pooled connection) means neither: no tenant row is
-- visible.  Plain SQL functions, so the planner inlines them into every policy.
CREATE FUNCTION ft.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('ft.tenant', true), '') $$;

CREATE FUNCTION ft.platform_scope() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('ft.scope', true), '') = 'platform' $$;

-- The rollups as services read them.  TimescaleDB's continuous aggregates cannot carry row-level
-- security, so on both backends services read the rollups through these views, which filter by the
-- same rule as the policies (on plain PostgreSQL the rollups are tables with RLS as well: the same SQL
-- on both sides).  security_barrier: the filter runs before any function of the caller's query can see
-- a row.  ft_app may read the views only, never the rollups beneath them.
CREATE VIEW ft.readings_hourly_v WITH (security_barrier) AS
    SELECT tenant_id, device_id, metric_id, bucket, n, sum, min, max
    FROM ft.readings_hourly
    WHERE tenant_id = ft.current_tenant() OR ft.platform_scope();

CREATE VIEW ft.readings_daily_v WITH (security_barrier) AS
    SELECT tenant_id, device_id, metric_id, bucket, n, sum, min, max
    FROM ft.readings_daily
    WHERE tenant_id = ft.current_tenant() OR ft.platform_scope();

-- A day partition of ft.readings (plain PostgreSQL): the ingest creates the days its batches need, but
-- ft_app may not create tables, so it asks this function, which runs as the owner and can do only that.
-- The partition is made readable by nobody but the owner: row-level security on ft.readings applies to
-- queries through ft.readings, not to a partition queried by its own name.  Returns the partition's
-- name, or NULL when it existed.  (Unused on TimescaleDB, which makes its own chunks.)
CREATE FUNCTION ft.create_readings_partition(day date) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ft, pg_temp
    SET TimeZone = 'UTC'
    AS $$
DECLARE
    part text := 'readings_p' || to_char(day, 'YYYYMMDD');
    lower_bound timestamptz := day::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'create_readings_partition: day is NULL';
    END IF;
    IF to_regclass(format('ft.%I', part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE ft.%I (LIKE ft.readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('REVOKE ALL ON ft.%I FROM PUBLIC, ft_app', part);
    EXECUTE format('ALTER TABLE ft.readings ATTACH PARTITION ft.%I FOR VALUES FROM (%L) TO (%L)',
                   part, lower_bound, lower_bound + INTERVAL '24 hours');
    RETURN part;
END
$$;
REVOKE EXECUTE ON FUNCTION ft.create_readings_partition(date) FROM PUBLIC;
