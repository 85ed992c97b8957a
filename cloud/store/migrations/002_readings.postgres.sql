-- Readings and their rollups on plain PostgreSQL (version 2, chosen when TimescaleDB cannot be loaded).
--
-- ft.readings is partitioned by RANGE (ts), one partition per UTC day, named readings_pYYYYMMDD.
-- There is deliberately no DEFAULT partition: a row for a day without a partition fails loudly
-- instead of piling up where nothing drains it.  Writers call cloud.store.partitions.ensure_partitions
-- for the days of a batch first (cheap: known partitions are cached); the maintenance loop keeps
-- partitions_ahead_days ready and drops whole partitions past retention_days.
--
-- The rollup tables have the same names and columns as the continuous aggregates of the
-- TimescaleDB variant.  They are recomputed by cloud.store.rollups from raw rows; the statement
-- trigger below marks which (device, hour) pairs an insert touched, so late and backfilled data
-- is reflected at the next refresh.  Buckets are UTC hours and days.  Only numeric values count.

CREATE TABLE ft.readings (
    tenant_id   text NOT NULL,
    device_id   text NOT NULL,
    metric_id   integer NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,           -- NULL when the record carries no number (text, comm error)
    value_text  text,
    quality     integer NOT NULL DEFAULT 0, -- contract.telemetry Q_* bit mask
    trust       smallint NOT NULL CHECK (trust IN (1, 2)),  -- 1 node-signed, 2 gateway-attested
    epoch       integer NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (device_id, metric_id, ts)
) PARTITION BY RANGE (ts);

-- Created on every partition (existing and future): block-range index on time, tiny and enough
-- for the time-ordered appends readings are.
CREATE INDEX readings_ts_brin ON ft.readings USING brin (ts);

CREATE TABLE ft.readings_hourly (
    tenant_id  text NOT NULL,
    device_id  text NOT NULL,
    metric_id  integer NOT NULL,
    bucket     timestamptz NOT NULL,
    n          bigint NOT NULL,
    sum        double precision,
    min        double precision,
    max        double precision,
    PRIMARY KEY (device_id, metric_id, bucket)
);
CREATE INDEX readings_hourly_bucket ON ft.readings_hourly USING brin (bucket);

CREATE TABLE ft.readings_daily (LIKE ft.readings_hourly INCLUDING ALL);

-- (device, hour) pairs whose rollups are stale.  Append-only, no key: concurrent writers never
-- wait on each other here; cloud.store.rollups drains it with DELETE ... RETURNING.
CREATE TABLE ft.rollup_dirty (
    tenant_id  text NOT NULL,
    device_id  text NOT NULL,
    hour       timestamptz NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ft.mark_rollups_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ft.rollup_dirty (tenant_id, device_id, hour)
    SELECT DISTINCT tenant_id, device_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')
    FROM inserted WHERE value IS NOT NULL;
    RETURN NULL;
END
$$;

-- Fires once per INSERT or COPY statement on ft.readings (rows routed to any partition are in
-- the transition table; rows skipped by ON CONFLICT DO NOTHING are not).
CREATE TRIGGER readings_mark_rollups_dirty
    AFTER INSERT ON ft.readings
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ft.mark_rollups_dirty();
