-- Downlink to sensor nodes: desired config (versioned, with history), firmware releases, OTA jobs.
-- The cloud signs each config frame and OTA manifest with the NODE's key when it is requested and
-- keeps the signed bytes, so the publisher (cloud.downlink.publisher) only relays stored frames and
-- never needs the key-encryption key.  Inserts send NOTIFY ft_downlink (cloud.store.downlink).
-- Tenant-owned tables carry tenant_id (row-level security comes next); releases are platform-wide.

-- One row per config version of a node: the newest is the desired state, older rows are its history.
CREATE TABLE ft.node_configs (
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    device_id     text NOT NULL REFERENCES ft.devices (id),
    version       integer NOT NULL CHECK (version >= 1),
    config        jsonb NOT NULL,          -- the "cfg" object exactly as signed
    gateway_id    text NOT NULL REFERENCES ft.gateways (id),  -- where it is published
    key_epoch     integer NOT NULL,        -- the node key epoch that signed it
    frame         bytea NOT NULL,          -- the signed contract Config frame, published verbatim
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    published_at  timestamptz,             -- when the broker acknowledged it (PUBACK); NULL: pending
    PRIMARY KEY (device_id, version)
);
CREATE INDEX node_configs_tenant ON ft.node_configs (tenant_id);
CREATE INDEX node_configs_pending ON ft.node_configs (device_id) WHERE published_at IS NULL;

-- What a node last said it runs (its birth's config_version; its installed OTA build).  Filled by
-- cloud.store.downlink.record_node_report; NULL until the ingest carries node births to the cloud.
CREATE TABLE ft.node_reported (
    tenant_id         text NOT NULL REFERENCES ft.tenants (id),
    device_id         text PRIMARY KEY REFERENCES ft.devices (id),
    config_version    integer,
    firmware_version  integer,
    reported_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_reported_tenant ON ft.node_reported (tenant_id);

-- Firmware files by content (SHA-256): a file unchanged between releases is stored once, and the
-- gateways cache them under the same name (topics.gateway_file).  Platform-wide, not tenant-owned.
CREATE TABLE ft.firmware_blobs (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        integer NOT NULL CHECK (size >= 0),
    content     bytea NOT NULL CHECK (length(content) = size)
);

-- A firmware release: a build number that only grows (the node refuses a lower one) and its files.
CREATE TABLE ft.firmware_releases (
    version     integer PRIMARY KEY CHECK (version >= 1),
    manifest    jsonb NOT NULL,            -- {"version": N, "files": [{"path", "sha256", "size"}]}
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);

CREATE TABLE ft.firmware_release_files (
    version     integer NOT NULL REFERENCES ft.firmware_releases (version),
    path        text NOT NULL,
    sha256      text NOT NULL REFERENCES ft.firmware_blobs (sha256),
    PRIMARY KEY (version, path)
);

-- One OTA job per node and release: pending -> published (PUBACK) -> done | failed (reported by
-- the node), or superseded when a newer job for the node replaces its retained manifest first.
CREATE TABLE ft.ota_jobs (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    device_id     text NOT NULL REFERENCES ft.devices (id),
    version       integer NOT NULL REFERENCES ft.firmware_releases (version),
    gateway_id    text NOT NULL REFERENCES ft.gateways (id),
    key_epoch     integer NOT NULL,
    frame         bytea NOT NULL,          -- the signed OTA manifest frame, published verbatim
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'published', 'done', 'failed', 'superseded')),
    detail        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    published_at  timestamptz,
    finished_at   timestamptz,
    UNIQUE (device_id, version)
);
CREATE INDEX ota_jobs_tenant ON ft.ota_jobs (tenant_id);
CREATE INDEX ota_jobs_pending ON ft.ota_jobs (id) WHERE status = 'pending';

-- The downlink publisher's broker login: writes gateways' node and file downlink topics only.
ALTER TABLE ft.service_accounts DROP CONSTRAINT service_accounts_role_check;
ALTER TABLE ft.service_accounts ADD CONSTRAINT service_accounts_role_check CHECK (role IN ('ingest', 'downlink'));
