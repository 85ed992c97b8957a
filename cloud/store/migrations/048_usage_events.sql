-- Usage events of the village service-point terminal (version 48): page views, clicks on its actions and
-- time on page, recorded only while the farmer's consent for service metrics is active.  The code is
-- cloud/web/usage_events.py; the tenant's service metrics (counts per page and day) are read from here.
-- (Version 47 was taken by the fleet service's migration, so this is 48.)

-- The consent: a purpose and a data scope of their own (cloud/consent/texts.py holds the words; the checks
-- below must list the same values, tests/test_consent.py compares them).
ALTER TABLE ft.consents DROP CONSTRAINT consents_purpose_check;
ALTER TABLE ft.consents ADD CONSTRAINT consents_purpose_check
    CHECK (purpose IN ('credit_assessment', 'insurance', 'advice', 'service_metrics'));
ALTER TABLE ft.consents DROP CONSTRAINT consents_scopes_check;
ALTER TABLE ft.consents ADD CONSTRAINT consents_scopes_check
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['soil', 'weather', 'yields', 'registry', 'usage']::text[]);

-- One row per event.  page and target are route patterns (/terminal/consents/{consent_id}/revoke), never
-- the ids in a path, so the table says which pages are used, not which records were looked at.  consent_id
-- is the consent the event was recorded under; assisted: a service-point clerk was helping the farmer.
CREATE TABLE ft.usage_events (
    id           bigserial PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES ft.tenants (id),
    farmer_id    text NOT NULL,
    consent_id   text NOT NULL REFERENCES ft.consents (id),
    kind         text NOT NULL CHECK (kind IN ('view', 'click', 'leave')),
    page         text NOT NULL CHECK (page ~ '^/terminal[A-Za-z0-9_/{}.-]{0,190}$'),
    target       text CHECK (length(target) <= 200),
    duration_ms  integer CHECK (duration_ms BETWEEN 0 AND 86400000),
    assisted     boolean NOT NULL DEFAULT false,
    at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'click') = (target IS NOT NULL)),
    CHECK ((kind = 'leave') = (duration_ms IS NOT NULL))
);
CREATE INDEX usage_events_tenant_at ON ft.usage_events (tenant_id, at);
CREATE INDEX usage_events_farmer ON ft.usage_events (tenant_id, farmer_id);

-- The farmer's answer to "may we count how you use the terminal?", so the terminal asks once.  A yes is
-- also a consent (ft.consents, confirmed with the farmer's PIN); a no is kept here only.
CREATE TABLE ft.usage_prompts (
    tenant_id    text NOT NULL REFERENCES ft.tenants (id),
    farmer_id    text NOT NULL,
    answer       text NOT NULL CHECK (answer IN ('yes', 'no')),
    answered_at  timestamptz NOT NULL DEFAULT now(),
    answered_by  text NOT NULL,          -- the principal (the farmer's user)
    PRIMARY KEY (tenant_id, farmer_id)
);
