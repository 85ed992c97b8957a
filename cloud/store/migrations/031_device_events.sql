-- Maintenance history of devices: provisioned, replaced, rekeyed, moved.  The credit trust checks
-- read it: a gap or a jump in a series next to a "replaced" event is a registered maintenance, not
-- tampering.  Rows are never updated or deleted (history); `id` is chosen by the client when it
-- wants a retried request to be recorded once (the provisioning tool sends one per step).

CREATE TABLE ft.device_events (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    device_id   text NOT NULL REFERENCES ft.devices (id),
    kind        text NOT NULL CHECK (kind IN ('provisioned', 'replaced', 'rekeyed', 'moved')),
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
    at          timestamptz NOT NULL DEFAULT now(),
    by          text NOT NULL
);
CREATE INDEX device_events_device ON ft.device_events (tenant_id, device_id, at);
