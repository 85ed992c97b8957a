-- Counters of the running ingest workers, for monitoring without a port per worker: each worker
-- upserts its own row every few seconds (cloud.ingest.counters); the API and operators read the
-- table.  A row whose updated_at is old belongs to a worker that stopped or died.
-- Platform-level, not tenant-owned: one worker serves every tenant's gateways.

CREATE TABLE ft.ingest_workers (
    worker_id   text PRIMARY KEY,
    host        text NOT NULL DEFAULT '',
    pid         integer,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    counters    jsonb NOT NULL        -- cloud.ingest.counters.Counters.snapshot()
);
