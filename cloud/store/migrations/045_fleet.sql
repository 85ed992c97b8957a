-- Fleet operations (version 45): presence and health of gateways and devices, alert rules and alerts,
-- silences, webhooks with their delivery log, OTA campaigns.  The code is cloud/fleet/*.
--
-- Every table has tenant_id, so row-level security covers it (cloud.store.tenancy, applied after every
-- migration run).  Subjects are named (subject_kind, subject_id): 'gateway' or 'device' and its id.

-- The latest known state of each gateway and device, kept by the fleet consumer from gateways' births,
-- wills and heartbeats (cloud.fleet.presence).  One row per subject, updated in place.
CREATE TABLE ft.fleet_state (
    tenant_id        text NOT NULL REFERENCES ft.tenants (id),
    subject_kind     text NOT NULL CHECK (subject_kind IN ('gateway', 'device')),
    subject_id       text NOT NULL,
    gateway_id       text,                    -- a device's gateway (the one whose heartbeat named it)
    online           boolean NOT NULL DEFAULT false,
    presence         text NOT NULL DEFAULT 'unknown'
                     CHECK (presence IN ('birth', 'will', 'heartbeat', 'timeout', 'unknown')),
    presence_at      timestamptz,             -- when the presence last changed
    last_seen_at     timestamptz,             -- the last message that showed it alive
    software         text,                    -- a gateway's sw, a device's fw
    health_state     text,                    -- a device's ok / degraded / down / unknown as its gateway saw it
    battery          double precision,
    battery_unit     text,
    rssi             double precision,
    outbox_depth     integer,
    outbox_oldest_s  double precision,
    outbox_dropped   bigint,
    disk_free_mb     double precision,
    errors           bigint,
    refused          jsonb NOT NULL DEFAULT '{}'::jsonb,  -- what a node reported refusing, by reason
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_kind, subject_id)
);
CREATE INDEX fleet_state_tenant ON ft.fleet_state (tenant_id, subject_kind);

-- Trends, downsampled: one row per subject and bucket (FLEET_HISTORY_BUCKET in cloud.fleet.presence),
-- the bucket's last values and its largest outbox depth.
CREATE TABLE ft.fleet_history (
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    subject_kind  text NOT NULL CHECK (subject_kind IN ('gateway', 'device')),
    subject_id    text NOT NULL,
    bucket        timestamptz NOT NULL,
    online        boolean NOT NULL,
    battery       double precision,
    rssi          double precision,
    outbox_depth  integer,
    outbox_max    integer,
    heartbeats    integer NOT NULL DEFAULT 1,
    PRIMARY KEY (subject_kind, subject_id, bucket)
);
CREATE INDEX fleet_history_tenant ON ft.fleet_history (tenant_id, bucket);

-- Alert rules of a tenant.  kind decides which fields matter (cloud.fleet.rules checks them):
--   threshold        metric op threshold (latest reading of a device within window_s)
--   no_data          no reading of metric (any metric if null) for window_s
--   rate_of_change   |change of metric per hour| over window_s above threshold
--   battery_low      reported battery below threshold (in the unit the node sends)
--   backlog_growing  a gateway's outbox depth grew by more than threshold over window_s
--   device_offline   a gateway or device offline (will or heartbeat timeout) for window_s
-- The subject filter: subject_kind/subject_id null = every subject the rule can apply to.
CREATE TABLE ft.alert_rules (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    name          text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    kind          text NOT NULL CHECK (kind IN ('threshold', 'no_data', 'rate_of_change', 'battery_low',
                                                'backlog_growing', 'device_offline')),
    subject_kind  text CHECK (subject_kind IN ('gateway', 'device')),
    subject_id    text,
    metric        text,
    op            text CHECK (op IN ('>', '<', '>=', '<=')),
    threshold     double precision,
    window_s      integer NOT NULL DEFAULT 3600 CHECK (window_s BETWEEN 1 AND 31 * 86400),
    severity      text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Alerts: open -> acknowledged -> resolved (or open -> resolved when the condition clears).  At most
-- one alert per rule and subject is not resolved (the partial unique index): deduplication in the
-- database itself.  A silenced alert is recorded like any other but never notified.
CREATE TABLE ft.alerts (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES ft.tenants (id),
    rule_id          bigint NOT NULL REFERENCES ft.alert_rules (id) ON DELETE CASCADE,
    subject_kind     text NOT NULL CHECK (subject_kind IN ('gateway', 'device')),
    subject_id       text NOT NULL,
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    severity         text NOT NULL,
    message          text NOT NULL,
    value            double precision,
    silenced         boolean NOT NULL DEFAULT false,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),   -- the last evaluation that found the condition
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz
);
CREATE UNIQUE INDEX alerts_one_active ON ft.alerts (rule_id, subject_kind, subject_id) WHERE state <> 'resolved';
CREATE INDEX alerts_tenant ON ft.alerts (tenant_id, state, opened_at DESC);

-- Silences for maintenance windows: alerts matching (rule, subject) opened between starts_at and ends_at
-- are recorded silenced and not notified.  Null rule / subject = any.
CREATE TABLE ft.silences (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    rule_id       bigint REFERENCES ft.alert_rules (id) ON DELETE CASCADE,
    subject_kind  text CHECK (subject_kind IN ('gateway', 'device')),
    subject_id    text,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    reason        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_tenant ON ft.silences (tenant_id, ends_at);

-- Webhooks: alert events are POSTed to url with an HMAC-SHA256 signature of the body under secret.
CREATE TABLE ft.webhooks (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    url         text NOT NULL CHECK (url ~ '^https?://'),
    secret      text NOT NULL CHECK (length(secret) >= 16),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);
CREATE INDEX webhooks_tenant ON ft.webhooks (tenant_id);

-- The delivery log: one row per event and webhook, retried with exponential backoff until delivered or
-- out of attempts.
CREATE TABLE ft.webhook_deliveries (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES ft.tenants (id),
    webhook_id       bigint NOT NULL REFERENCES ft.webhooks (id) ON DELETE CASCADE,
    alert_id         bigint REFERENCES ft.alerts (id) ON DELETE SET NULL,
    event            text NOT NULL,            -- alert.opened, alert.resolved, ...
    body             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON ft.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_tenant ON ft.webhook_deliveries (tenant_id, created_at DESC);

-- OTA campaigns: one release to many nodes (kind node: version is a firmware build, jobs through
-- ft.ota_jobs) or gateways (kind gateway: an agent release at url with sha256, sent on the gateway's update
-- topic), in stages of a growing share of the targets; halted when the failure rate passes max_failure_rate.
CREATE TABLE ft.campaigns (
    id                bigserial PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES ft.tenants (id),
    name              text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    kind              text NOT NULL CHECK (kind IN ('node', 'gateway')),
    firmware_version  integer REFERENCES ft.firmware_releases (version),   -- kind node
    agent_version     text CHECK (agent_version ~ '^[A-Za-z0-9_.+-]{1,64}$'),  -- kind gateway
    agent_url         text CHECK (agent_url ~ '^https?://'),
    agent_sha256      text CHECK (agent_sha256 ~ '^[0-9a-f]{64}$'),
    target            jsonb NOT NULL DEFAULT '{}'::jsonb,   -- {"spec", "firmware", "farm_id"} as chosen
    stages            integer[] NOT NULL CHECK (cardinality(stages) >= 1),  -- cumulative percentages, last 100
    stage_timeout_s   integer NOT NULL CHECK (stage_timeout_s >= 1),
    max_failure_rate  double precision NOT NULL CHECK (max_failure_rate BETWEEN 0 AND 1),
    state             text NOT NULL DEFAULT 'running'
                      CHECK (state IN ('running', 'paused', 'halted', 'done', 'cancelled')),
    stage             integer NOT NULL DEFAULT 0,        -- index into stages of the stage in progress
    stage_started_at  timestamptz,
    halted_reason     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'node' AND firmware_version IS NOT NULL)
           OR (kind = 'gateway' AND agent_version IS NOT NULL AND agent_url IS NOT NULL AND agent_sha256 IS NOT NULL))
);
CREATE INDEX campaigns_tenant ON ft.campaigns (tenant_id, state);

-- Each target of a campaign: waiting for its stage, sent, done or failed (or timed out, skipped).
CREATE TABLE ft.campaign_targets (
    campaign_id   bigint NOT NULL REFERENCES ft.campaigns (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    subject_id    text NOT NULL,           -- a node's or a gateway's id
    stage         integer NOT NULL,        -- the stage that sends it
    position      integer NOT NULL,        -- its place in the rollout order
    status        text NOT NULL DEFAULT 'waiting'
                  CHECK (status IN ('waiting', 'sent', 'done', 'failed', 'timeout', 'skipped')),
    ota_job_id    bigint REFERENCES ft.ota_jobs (id),
    frame         bytea,                   -- kind gateway: the signed update message, published verbatim
    detail        text NOT NULL DEFAULT '',
    sent_at       timestamptz,
    published_at  timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (campaign_id, subject_id)
);
CREATE INDEX campaign_targets_tenant ON ft.campaign_targets (tenant_id);
CREATE INDEX campaign_targets_unpublished ON ft.campaign_targets (campaign_id)
    WHERE status = 'sent' AND frame IS NOT NULL AND published_at IS NULL;
