-- Broker logins of cloud services (the ingest workers share one), next to the gateways' own
-- logins in ft.gateways.  `fieldtrust cloud broker-config` writes both into Mosquitto's files.
-- Platform-level, not tenant-owned: a service reads every tenant's uplinks.

CREATE TABLE ft.service_accounts (
    username       text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.-]{1,64}$'),
    role           text NOT NULL CHECK (role IN ('ingest')),
    password_hash  text NOT NULL,      -- mosquitto_passwd format (PBKDF2-SHA512), never the password
    created_at     timestamptz NOT NULL DEFAULT now()
);
