-- The fleet service (version 47): a broker login of its own, and its loop's status for monitoring.
-- The code is cloud/fleet/service.py and cloud/fleet/status.py.

-- The fleet service's broker login reads gateways' health and state and writes their agent updates
-- (cloud.broker_acl.SERVICE_ACLS).
ALTER TABLE ft.service_accounts DROP CONSTRAINT service_accounts_role_check;
ALTER TABLE ft.service_accounts ADD CONSTRAINT service_accounts_role_check
    CHECK (role IN ('ingest', 'downlink', 'fleet'));

-- What each running fleet process is doing, like ft.ingest_workers: each upserts its own row after every
-- cycle of its loop (the owner of the fleet lock, or a standby); the API reads them
-- (GET /api/v1/fleet/status).  A row whose updated_at is old belongs to a process that stopped or died.
-- Platform-level, not tenant-owned: one fleet loop serves every tenant.
CREATE TABLE ft.fleet_services (
    service_id  text PRIMARY KEY,
    host        text NOT NULL DEFAULT '',
    pid         integer,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    role        text NOT NULL,          -- owner, standby, disconnected, starting
    status      jsonb NOT NULL          -- cloud.fleet.service.Status
);
