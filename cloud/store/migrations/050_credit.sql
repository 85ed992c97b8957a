-- The credit service (version 50): each tenant's product shelf and deployed scorecards, loan applications,
-- their assessments, officers' decisions with maker-checker overrides, farmers' appeals, and adverse-action
-- notices as issued.  The code is cloud/credit (service.py holds the state machine of an application).
--
-- Every table has tenant_id, so row-level security covers it (cloud.store.tenancy, applied after every
-- migration run).  Rows of another table are referenced together with tenant_id, so a reference across
-- tenants is impossible in the database itself.  What the rules say is also said here where a CHECK can:
-- an override carries a reason of at least 10 characters and a checker who is not its maker; a notice is
-- never changed once issued.

-- A tenant's product shelf, credit policy and crop table (rural_credit.assessment products, decision, limit),
-- versioned: the highest version is in force; older ones stay, because assessments name the version they used.
CREATE TABLE ft.credit_shelves (
    tenant_id   text NOT NULL REFERENCES ft.tenants (id),
    version     integer NOT NULL CHECK (version >= 1),
    shelf       jsonb NOT NULL CHECK (jsonb_typeof(shelf) = 'object'),
    policy      jsonb NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
    crops       jsonb NOT NULL CHECK (jsonb_typeof(crops) = 'object'),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),  -- of the three documents' canonical JSON
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Scorecards deployed to a tenant from a model registry folder (rural_credit.scorecard.registry): the model
-- JSON exactly as the registry holds it (text, not jsonb, so its SHA-256 can be recomputed: the CHECK does)
-- and its model card.  One champion per tenant scores applications.
CREATE TABLE ft.credit_models (
    tenant_id      text NOT NULL REFERENCES ft.tenants (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version        text NOT NULL CHECK (version ~ '^v[0-9]{4}$'),
    model_json     text NOT NULL,
    model_sha256   text NOT NULL CHECK (model_sha256 = encode(sha256(convert_to(model_json, 'UTF8')), 'hex')),
    card           jsonb NOT NULL CHECK (jsonb_typeof(card) = 'object'),
    champion       boolean NOT NULL DEFAULT false,
    deployed_by    text NOT NULL,
    deployed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version)
);
CREATE UNIQUE INDEX credit_models_champion ON ft.credit_models (tenant_id) WHERE champion;

-- A loan application.  status: submitted → scored → approved | referred | declined → (appealed →
-- under_review → decided) | cancelled.  outcome is the decision in force (an officer's, or an approved
-- override), NULL until an officer decided.  The season is the farm-season whose data is assessed.
CREATE TABLE ft.loan_applications (
    id             text NOT NULL CHECK (id ~ '^la_[0-9a-f]{16}$'),
    tenant_id      text NOT NULL REFERENCES ft.tenants (id),
    farmer_id      text NOT NULL,
    farm_id        text NOT NULL,
    season         text NOT NULL CHECK (season ~ '^[0-9]{4}-[a-z0-9-]{1,32}$'),
    season_start   timestamptz NOT NULL,
    season_end     timestamptz NOT NULL,
    product_id     text CHECK (product_id ~ '^[a-z0-9][a-z0-9_-]*$'),  -- the product asked for, if any
    amount         double precision NOT NULL CHECK (amount > 0 AND amount < 1e9),
    term_months    integer NOT NULL CHECK (term_months BETWEEN 1 AND 120),
    purpose        text NOT NULL CHECK (purpose ~ '^[a-z][a-z_]{1,39}$'),
    prior_loans    integer NOT NULL DEFAULT 0 CHECK (prior_loans >= 0),
    prior_repaid   integer NOT NULL DEFAULT 0 CHECK (prior_repaid >= 0),
    status         text NOT NULL DEFAULT 'submitted' CHECK (status IN (
                       'submitted', 'scored', 'approved', 'referred', 'declined', 'appealed', 'under_review',
                       'decided', 'cancelled')),
    outcome        text CHECK (outcome IN ('approve', 'refer', 'decline')),
    submitted_by   text NOT NULL,             -- the principal who filed it (the farmer, a clerk, a partner key)
    assisted_by    text,                      -- the clerk's user id when a clerk filed it for the farmer
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, farmer_id) REFERENCES ft.farmers (tenant_id, id),
    FOREIGN KEY (tenant_id, farm_id) REFERENCES ft.farms (tenant_id, id),
    CHECK (prior_repaid <= prior_loans),
    CHECK (season_end > season_start)
);
CREATE INDEX loan_applications_queue ON ft.loan_applications (tenant_id, status, created_at);
CREATE INDEX loan_applications_farmer ON ft.loan_applications (tenant_id, farmer_id);
CREATE INDEX loan_applications_farm ON ft.loan_applications (tenant_id, farm_id);

-- An assessment of an application: everything the officer sees, as computed (the newest is current).
CREATE TABLE ft.credit_assessments (
    id                  text NOT NULL CHECK (id ~ '^ca_[0-9a-f]{16}$'),
    tenant_id           text NOT NULL REFERENCES ft.tenants (id),
    application_id      text NOT NULL,
    model_name          text NOT NULL,
    model_version       text NOT NULL,
    model_sha256        text NOT NULL CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
    shelf_version       integer NOT NULL,
    policy_version      text NOT NULL,
    score               integer NOT NULL,
    pd                  double precision NOT NULL CHECK (pd BETWEEN 0 AND 1),
    grade               text NOT NULL,
    optimistic_score    integer NOT NULL,
    reasons             jsonb NOT NULL CHECK (jsonb_typeof(reasons) = 'array'),
    counterfactuals     jsonb NOT NULL CHECK (jsonb_typeof(counterfactuals) = 'array'),
    contributions       jsonb NOT NULL CHECK (jsonb_typeof(contributions) = 'array'),  -- points per characteristic
    trust               double precision CHECK (trust BETWEEN 0 AND 1),      -- NULL: no farm data
    coverage            double precision CHECK (coverage BETWEEN 0 AND 1),
    trust_parts         jsonb NOT NULL CHECK (jsonb_typeof(trust_parts) = 'object'),
    untrusted_sources   text[] NOT NULL DEFAULT '{}',
    provenance_sha256   text CHECK (provenance_sha256 ~ '^[0-9a-f]{64}$'),  -- of exactly the readings used
    features            jsonb NOT NULL CHECK (jsonb_typeof(features) = 'object'),
    untrusted_features  text[] NOT NULL DEFAULT '{}',
    data_scopes         text[] NOT NULL DEFAULT '{}',   -- the consented data scopes read
    data_withheld       text[] NOT NULL DEFAULT '{}',   -- data scopes the farmer did not consent to: not read
    credit_limit        double precision,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    recommendation      text NOT NULL CHECK (recommendation IN ('approve', 'refer', 'decline')),
    decision_key        text NOT NULL CHECK (decision_key ~ '^[0-9a-f]{64}$'),
    decision            jsonb NOT NULL CHECK (jsonb_typeof(decision) = 'object'),   -- reasons, limit, product
    limit_detail        jsonb NOT NULL CHECK (jsonb_typeof(limit_detail) = 'object'),
    products            jsonb NOT NULL CHECK (jsonb_typeof(products) = 'array'),
    hint                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(hint) = 'object'),
    assessed_by         text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, application_id) REFERENCES ft.loan_applications (tenant_id, id)
);
CREATE INDEX credit_assessments_application ON ft.credit_assessments (tenant_id, application_id, created_at);

-- An officer's decision.  override = it departs from the recommendation: it needs a reason and a second
-- officer (the checker, never the maker) before it is in force.  status: in_force, pending (an override
-- waiting for its checker), rejected (by the checker), withdrawn (the application was cancelled meanwhile),
-- superseded (a later decision took its place, after an appeal or a referral).
CREATE TABLE ft.credit_decisions (
    id              text NOT NULL CHECK (id ~ '^cd_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    application_id  text NOT NULL,
    assessment_id   text NOT NULL,
    maker           text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('approve', 'refer', 'decline')),
    recommended     text NOT NULL CHECK (recommended IN ('approve', 'refer', 'decline')),
    override        boolean GENERATED ALWAYS AS (outcome <> recommended) STORED,
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 2000),
    status          text NOT NULL CHECK (status IN ('in_force', 'pending', 'rejected', 'withdrawn', 'superseded')),
    checker         text,
    checker_note    text CHECK (length(checker_note) <= 2000),
    checked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, application_id) REFERENCES ft.loan_applications (tenant_id, id),
    FOREIGN KEY (tenant_id, assessment_id) REFERENCES ft.credit_assessments (tenant_id, id),
    CONSTRAINT credit_decisions_override_reason CHECK (outcome = recommended OR length(btrim(reason)) >= 10),
    CONSTRAINT credit_decisions_four_eyes CHECK (checker IS NULL OR checker <> maker),
    CONSTRAINT credit_decisions_checked CHECK (
        (outcome = recommended AND checker IS NULL AND status <> 'pending' AND status <> 'rejected')
        OR (outcome <> recommended AND (status = 'pending' OR status = 'withdrawn' OR checker IS NOT NULL)))
);
CREATE INDEX credit_decisions_application ON ft.credit_decisions (tenant_id, application_id, created_at);
CREATE UNIQUE INDEX credit_decisions_one_pending ON ft.credit_decisions (tenant_id, application_id)
    WHERE status = 'pending';

-- A farmer's appeal: the note puts the application before a person until an officer's decision closes it
-- (upheld: the outcome stands; changed: it was changed).
CREATE TABLE ft.credit_appeals (
    id              text NOT NULL CHECK (id ~ '^cp_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    application_id  text NOT NULL,
    appealed_outcome text NOT NULL CHECK (appealed_outcome IN ('refer', 'decline')),
    note            text NOT NULL CHECK (length(btrim(note)) BETWEEN 1 AND 2000),
    filed_by        text NOT NULL,
    status          text NOT NULL DEFAULT 'appealed' CHECK (status IN ('appealed', 'under_review', 'upheld',
                                                                       'changed', 'withdrawn')),
    reviewer        text,
    review_started_at timestamptz,
    decision_id     text,                -- the decision that closed it
    closed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, application_id) REFERENCES ft.loan_applications (tenant_id, id),
    FOREIGN KEY (tenant_id, decision_id) REFERENCES ft.credit_decisions (tenant_id, id),
    CHECK ((status IN ('upheld', 'changed')) = (decision_id IS NOT NULL))
);
CREATE UNIQUE INDEX credit_appeals_one_open ON ft.credit_appeals (tenant_id, application_id)
    WHERE status IN ('appealed', 'under_review');

-- An adverse-action notice, in Chinese and English, exactly as issued to the farmer: never changed.
CREATE TABLE ft.credit_notices (
    id              text NOT NULL CHECK (id ~ '^an_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    application_id  text NOT NULL,
    decision_id     text NOT NULL,
    text_zh         text NOT NULL CHECK (length(text_zh) > 0),
    text_en         text NOT NULL CHECK (length(text_en) > 0),
    reasons         jsonb NOT NULL CHECK (jsonb_typeof(reasons) = 'object'),   -- language → principal reasons
    issued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, application_id) REFERENCES ft.loan_applications (tenant_id, id),
    FOREIGN KEY (tenant_id, decision_id) REFERENCES ft.credit_decisions (tenant_id, id)
);
CREATE INDEX credit_notices_application ON ft.credit_notices (tenant_id, application_id, issued_at);

CREATE FUNCTION ft.credit_notice_as_issued() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ft, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'ft.credit_notices keeps notices as issued: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER credit_notices_as_issued BEFORE UPDATE OR DELETE ON ft.credit_notices
    FOR EACH ROW EXECUTE FUNCTION ft.credit_notice_as_issued();

-- Batch scoring runs: every farm of a tenant scored at once (pipeline.assess_batch), each farm's row kept.
CREATE TABLE ft.credit_batch_runs (
    id              text NOT NULL CHECK (id ~ '^cb_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    model_name      text NOT NULL,
    model_version   text NOT NULL,
    shelf_version   integer NOT NULL,
    season          text,                -- NULL: each farm's latest season
    request         jsonb NOT NULL CHECK (jsonb_typeof(request) = 'object'),
    farms           integer NOT NULL CHECK (farms >= 0),
    scored          integer NOT NULL CHECK (scored >= 0),
    skipped         jsonb NOT NULL CHECK (jsonb_typeof(skipped) = 'object'),  -- farm id → why it was not scored
    started_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE ft.credit_batch_scores (
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    run_id          text NOT NULL,
    farm_id         text NOT NULL,
    season          text NOT NULL,
    application_id  text,                -- NULL: scored on the run's notional application
    score           integer NOT NULL,
    grade           text NOT NULL,
    trust           double precision,
    coverage        double precision,
    outcome         text NOT NULL CHECK (outcome IN ('approve', 'refer', 'decline')),
    reason          text NOT NULL,
    credit_limit    double precision,
    product_id      text,
    PRIMARY KEY (tenant_id, run_id, farm_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES ft.credit_batch_runs (tenant_id, id),
    FOREIGN KEY (tenant_id, farm_id) REFERENCES ft.farms (tenant_id, id)
);
