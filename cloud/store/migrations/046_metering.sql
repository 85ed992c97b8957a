-- Metering for SaaS billing (version 46): usage per tenant and month, plans with quotas, the plan of each
-- tenant over time, quota warnings.  The code is cloud/metering/*.
--
-- Months are UTC calendar months, stored as their first day.  Ingest meters count by the time of the commit
-- (when the platform received and stored the data), not by the readings' own times.

-- One counter per tenant, month, meter and key.  key is '' for meters that are per tenant only, and the caller
-- ('api_key:<id>', 'user:<id>') for api_calls and data_exported_bytes.  Ingest meters (messages_ingested,
-- bytes_ingested, readings_stored) are added to in the transaction that stores the readings (so a rolled-back
-- or redelivered batch is never counted); API meters by the API's buffered flush.  active_devices is not
-- kept here: it is computed from ft.usage_devices.
CREATE TABLE ft.usage_monthly (
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    month       date NOT NULL CHECK (extract(day FROM month) = 1),
    meter       text NOT NULL CHECK (meter IN ('messages_ingested', 'bytes_ingested', 'readings_stored',
                                               'api_calls', 'data_exported_bytes')),
    key         text NOT NULL DEFAULT '',
    quantity    bigint NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month, meter, key)
);

-- The devices seen in a month (a telemetry message of theirs stored): active_devices is their count.  One
-- insert per commit of the devices in it (ON CONFLICT DO NOTHING, which takes no row lock).
CREATE TABLE ft.usage_devices (
    tenant_id      text NOT NULL REFERENCES ft.tenants (id),
    month          date NOT NULL CHECK (extract(day FROM month) = 1),
    device_id      text NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month, device_id)
);

-- Plans: a monthly fee (the subscription) and, per meter, what the fee includes, the soft limit (a warning),
-- the hard limit (API calls refused; ingest never refused, see cloud.metering.quotas) and the price of use
-- beyond what is included.  quotas = {"<meter>": {"included": n, "soft": n|null, "hard": n|null,
-- "price": "<decimal>", "per": n}}: price per `per` units (per 1,000 messages, per 1 GB ...), checked by
-- cloud.metering.plans.  Shared by every tenant: a platform table.
CREATE TABLE ft.plans (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name         text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    monthly_fee  numeric(14, 4) NOT NULL DEFAULT 0 CHECK (monthly_fee >= 0),
    quotas       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(quotas) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Which plan a tenant is on, by month: from valid_from (a month) until valid_to (exclusive; null = open).
-- Plans change at month boundaries, so each month has one plan; assigning a new one closes the open row
-- (cloud.metering.plans.assign_plan).
CREATE TABLE ft.tenant_plans (
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    plan_id     text NOT NULL REFERENCES ft.plans (id),
    valid_from  date NOT NULL CHECK (extract(day FROM valid_from) = 1),
    valid_to    date CHECK (extract(day FROM valid_to) = 1 AND valid_to > valid_from),
    assigned_at timestamptz NOT NULL DEFAULT now(),
    assigned_by text NOT NULL,
    PRIMARY KEY (tenant_id, valid_from)
);

-- A soft or hard limit found crossed, once per tenant, month, meter and level: what the usage API shows as
-- warnings and what is notified (webhooks of the tenant, cloud.metering.quotas).
CREATE TABLE ft.usage_warnings (
    tenant_id    text NOT NULL REFERENCES ft.tenants (id),
    month        date NOT NULL CHECK (extract(day FROM month) = 1),
    meter        text NOT NULL,
    level        text NOT NULL CHECK (level IN ('soft', 'hard')),
    limit_value  bigint NOT NULL,
    quantity     bigint NOT NULL,      -- the usage when it was found
    found_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month, meter, level)
);
