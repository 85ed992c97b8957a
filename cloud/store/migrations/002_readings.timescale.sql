-- Readings and their rollups on TimescaleDB (version 2, chosen when the server can load the extension).
--
-- Same table, same rollup names and columns as the plain-PostgreSQL variant, so that
-- cloud.store.series runs the same SQL on both.  ft.readings is a hypertable with 1-day chunks,
-- compressed after 7 days (segment by device and metric, ordered by time); the rollups are
-- continuous aggregates with real-time aggregation (materialized_only = false), so a query sees
-- rows newer than the last refresh too.  Buckets are UTC hours and days: time_bucket on
-- timestamptz aligns hour and day buckets at UTC midnight, like date_bin with a 2000-01-01 UTC
-- origin on the other backend.  Only numeric values count.  Policy intervals here are the
-- defaults of cloud.config.CloudSettings; cloud.store.retention.configure_timescale applies
-- the configured values.

CREATE EXTENSION IF NOT EXISTS timescaledb;

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
);

SELECT create_hypertable('ft.readings', 'ts', chunk_time_interval => INTERVAL '1 day');

ALTER TABLE ft.readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric_id',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('ft.readings', compress_after => INTERVAL '7 days');

CREATE MATERIALIZED VIEW ft.readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id,
       device_id,
       metric_id,
       time_bucket(INTERVAL '1 hour', ts) AS bucket,
       count(value) AS n,
       sum(value) AS sum,
       min(value) AS min,
       max(value) AS max
FROM ft.readings
WHERE value IS NOT NULL
GROUP BY tenant_id, device_id, metric_id, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

-- Daily from hourly (a hierarchical continuous aggregate, TimescaleDB >= 2.9): the same
-- arithmetic as the plain variant, which also sums hourly rollups into days.
CREATE MATERIALIZED VIEW ft.readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id,
       device_id,
       metric_id,
       time_bucket(INTERVAL '1 day', bucket) AS bucket,
       sum(n)::bigint AS n,
       sum(sum) AS sum,
       min(min) AS min,
       max(max) AS max
FROM ft.readings_hourly
GROUP BY tenant_id, device_id, metric_id, time_bucket(INTERVAL '1 day', bucket)
WITH NO DATA;

-- Refresh windows reach back as far as ingest accepts late data (ingest_max_past_days, 732 by
-- default) and stay inside raw retention, so a refresh never erases rollups of dropped chunks.
-- A refresh only recomputes the invalidated parts of its window.
SELECT add_continuous_aggregate_policy('ft.readings_hourly',
    start_offset => INTERVAL '740 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('ft.readings_daily',
    start_offset => INTERVAL '740 days', end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');

SELECT add_retention_policy('ft.readings', drop_after => INTERVAL '3650 days');
