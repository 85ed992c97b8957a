-- FieldTrust core schema (version 1).  Every tenant-owned table carries tenant_id from the start.
-- Tables are in schema "ft".  Readings and their rollups are created by 002 (TimescaleDB or plain
-- PostgreSQL variant), so that this file is the same on both backends.

CREATE SCHEMA IF NOT EXISTS ft;

CREATE TABLE ft.tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ft.farms (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    name        text NOT NULL,
    latitude    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision CHECK (longitude BETWEEN -180 AND 180),
    area_ha     double precision CHECK (area_ha >= 0),
    crop        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX farms_tenant ON ft.farms (tenant_id);

CREATE TABLE ft.gateways (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id      text NOT NULL REFERENCES ft.tenants (id),
    farm_id        text REFERENCES ft.farms (id),
    name           text NOT NULL DEFAULT '',
    mqtt_username  text UNIQUE,
    mqtt_password_hash text,           -- mosquitto_passwd format (PBKDF2-SHA512), never the password
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz
);
CREATE INDEX gateways_tenant ON ft.gateways (tenant_id);

-- A device is a sensor node (signs its own messages) or a bus device behind a gateway (its
-- readings are attested by the gateway).
CREATE TABLE ft.devices (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    farm_id       text REFERENCES ft.farms (id),
    gateway_id    text REFERENCES ft.gateways (id),
    kind          text NOT NULL CHECK (kind IN ('node', 'bus')),
    spec_key      text,                -- model@version of its device spec, when known
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz
);
CREATE INDEX devices_tenant ON ft.devices (tenant_id);
CREATE INDEX devices_gateway ON ft.devices (gateway_id);

-- HMAC keys of gateways and nodes, per key epoch, encrypted with the key-encryption key (KEK)
-- that lives outside the database (AES-256-GCM; nonce || ciphertext; AAD = kind:id:epoch).
CREATE TABLE ft.keys (
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    owner_kind    text NOT NULL CHECK (owner_kind IN ('gateway', 'device')),
    owner_id      text NOT NULL,
    epoch         integer NOT NULL CHECK (epoch >= 0),
    key_enc       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    PRIMARY KEY (owner_kind, owner_id, epoch)
);

-- Metric names and units, so that readings stay narrow.
CREATE TABLE ft.metrics (
    id    serial PRIMARY KEY,
    name  text NOT NULL,
    unit  text NOT NULL,
    UNIQUE (name, unit)
);

-- The duplicate/conflict ledger: one row per message identity (device, key epoch, sequence).
CREATE TABLE ft.messages (
    device_id    text NOT NULL,
    epoch        integer NOT NULL,
    seq          bigint NOT NULL,
    tenant_id    text NOT NULL,
    gateway_id   text,
    digest       bytea NOT NULL,        -- SHA-256 of the body bytes
    trust        smallint NOT NULL,     -- 1 node-signed, 2 gateway-attested
    batch_id     text,
    frame        bytea,                 -- node-signed: the node's frame verbatim (re-verifiable)
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, epoch, seq)
);

-- Batches committed, so a redelivered batch is receipted again without re-doing work.
CREATE TABLE ft.batches (
    batch_id      text PRIMARY KEY,
    tenant_id     text NOT NULL,
    gateway_id    text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    frame         bytea NOT NULL,        -- the gateway's signed batch frame verbatim (re-verifiable)
    readings      integer NOT NULL DEFAULT 0,
    duplicates    integer NOT NULL DEFAULT 0,
    rejected      integer NOT NULL DEFAULT 0
);

-- Everything rejected, with the raw payload: nothing is silently dropped.
CREATE TABLE ft.dead_letters (
    id           bigserial PRIMARY KEY,
    tenant_id    text,
    gateway_id   text,
    device_id    text,
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL DEFAULT '',
    payload      bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received ON ft.dead_letters (received_at);
CREATE INDEX dead_letters_reason ON ft.dead_letters (reason);
