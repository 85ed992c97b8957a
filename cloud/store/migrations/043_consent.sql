-- Farmers' consents (version 43): which of a farmer's data may be used for which purpose, until when, as the
-- farmer confirmed with their own PIN (also when a clerk assists).  The code is cloud/consent; the purposes,
-- data scopes and languages below are cloud/consent/texts.py's (tests/test_consent.py checks they agree).
-- farmer_id refers to ft.farmers (migration 044, which comes later): the reference is added there or after.
-- A consent is never deleted or edited but for its revocation: its history is part of the audit trail.
CREATE TABLE ft.consents (
    id              text PRIMARY KEY CHECK (id ~ '^c_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    farmer_id       text NOT NULL,
    purpose         text NOT NULL CHECK (purpose IN ('credit_assessment', 'insurance', 'advice')),
    scopes          text[] NOT NULL CHECK (cardinality(scopes) > 0
                                           AND scopes <@ ARRAY['soil', 'weather', 'yields', 'registry']::text[]),
    granted_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_by      text,                  -- the principal who revoked it (the farmer, or a clerk with the PIN)
    confirmed_with  text NOT NULL DEFAULT 'farmer_pin' CHECK (confirmed_with IN ('farmer_pin')),
    granted_by      text NOT NULL,         -- the principal who recorded it
    assisted_by     text,                  -- the clerk's user id when a clerk assisted, else NULL
    text_version    text NOT NULL CHECK (text_version ~ '^[0-9a-f]{64}$'),  -- SHA-256 of the consent texts shown
    language        text NOT NULL CHECK (language IN ('zh-CN', 'en')),      -- the language it was shown in
    CHECK (expires_at > granted_at),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX consents_farmer ON ft.consents (tenant_id, farmer_id, purpose);
