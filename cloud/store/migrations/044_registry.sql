-- The farm registry (version 44): farmers, the farm's owner and tenure, fields with crop and season,
-- where and since when each device is installed, and one-use claim codes that put a node on the right
-- farm without typing ids.  The code is cloud/store/{farmers,fields,claim_codes,registry}.py.
--
-- Every new table has tenant_id, so row-level security covers it (cloud.store.tenancy, applied after
-- every migration run).  Farmer and field ids are unique within a tenant (a co-operative's member numbers
-- collide with another's), so they are referenced together with tenant_id: a composite foreign key also
-- makes a reference to another tenant's row impossible in the database itself, not only in the code.

-- A farmer.  The national id is never stored: only HMAC-SHA256 under a key derived from the KEK (outside
-- the database) and salted with the tenant id, so the registry can tell whether a person is registered
-- already, and a dump of the database cannot be searched for an id.  Sex and birth year are optional and
-- kept only with the farmer's consent (for fairness monitoring by group: docs/farm-registry.md).
CREATE TABLE ft.farmers (
    id                         text NOT NULL CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id                  text NOT NULL REFERENCES ft.tenants (id),
    name                       text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    phone                      text CHECK (phone ~ '^\+?[0-9]{6,20}$'),
    village                    text CHECK (length(village) <= 200),
    national_id_hash           bytea CHECK (length(national_id_hash) = 32),
    sex                        text CHECK (sex IN ('female', 'male', 'other')),
    birth_year                 smallint CHECK (birth_year BETWEEN 1900 AND 2100),
    demographics_consented_at  timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT farmers_demographics_consented
        CHECK ((sex IS NULL AND birth_year IS NULL) OR demographics_consented_at IS NOT NULL)
);
CREATE UNIQUE INDEX farmers_national_id ON ft.farmers (tenant_id, national_id_hash)
    WHERE national_id_hash IS NOT NULL;

-- Farms: their farmer, tenure and village.
ALTER TABLE ft.farms
    ADD COLUMN farmer_id   text,
    ADD COLUMN tenure      text CHECK (tenure IN ('owned', 'leased', 'communal')),
    ADD COLUMN village     text CHECK (length(village) <= 200),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT farms_tenant_key UNIQUE (tenant_id, id),
    ADD CONSTRAINT farms_farmer_fk FOREIGN KEY (tenant_id, farmer_id) REFERENCES ft.farmers (tenant_id, id);
CREATE INDEX farms_farmer ON ft.farms (tenant_id, farmer_id) WHERE farmer_id IS NOT NULL;

-- A field of a farm: its area, this season's crop (season '2026-long-rains', with its dates) and where it
-- is: a point, or a small GeoJSON Polygon (checked by cloud/store/fields.py: closed rings, at most 500
-- positions, longitude/latitude in range).
CREATE TABLE ft.fields (
    id            text NOT NULL CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    farm_id       text NOT NULL,
    name          text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    area_ha       double precision CHECK (area_ha > 0),
    crop          text CHECK (crop ~ '^[a-z][a-z_]{1,39}$'),
    season        text CHECK (season ~ '^[0-9]{4}-[a-z0-9-]{1,32}$'),
    season_start  date,
    season_end    date,
    latitude      double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude     double precision CHECK (longitude BETWEEN -180 AND 180),
    boundary      jsonb CHECK (jsonb_typeof(boundary) = 'object' AND boundary ->> 'type' = 'Polygon'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, farm_id, id),  -- target of the devices' (tenant, farm, field) reference
    FOREIGN KEY (tenant_id, farm_id) REFERENCES ft.farms (tenant_id, id),
    CONSTRAINT fields_season_dates CHECK (season_start IS NULL OR season_end IS NULL OR season_end > season_start),
    CONSTRAINT fields_season_named CHECK ((season_start IS NULL AND season_end IS NULL) OR season IS NOT NULL),
    CONSTRAINT fields_point CHECK ((latitude IS NULL) = (longitude IS NULL))
);
CREATE INDEX fields_farm ON ft.fields (tenant_id, farm_id);

-- Devices: their field (on their farm: the reference includes the farm), firmware and installation.
ALTER TABLE ft.devices
    ADD COLUMN field_id           text,
    ADD COLUMN firmware_version   text CHECK (length(firmware_version) BETWEEN 1 AND 64),
    ADD COLUMN install_note       text CHECK (length(install_note) <= 500),
    ADD COLUMN install_latitude   double precision CHECK (install_latitude BETWEEN -90 AND 90),
    ADD COLUMN install_longitude  double precision CHECK (install_longitude BETWEEN -180 AND 180),
    ADD COLUMN installed_at       timestamptz,
    ADD CONSTRAINT devices_field_fk FOREIGN KEY (tenant_id, farm_id, field_id)
        REFERENCES ft.fields (tenant_id, farm_id, id),
    ADD CONSTRAINT devices_field_on_farm CHECK (field_id IS NULL OR farm_id IS NOT NULL),
    ADD CONSTRAINT devices_install_point CHECK ((install_latitude IS NULL) = (install_longitude IS NULL));
CREATE INDEX devices_field ON ft.devices (tenant_id, field_id) WHERE field_id IS NOT NULL;

-- One-use claim codes: a clerk or admin makes one for a farm (and field); the technician types it on site
-- and the node lands there.  Only the code's SHA-256 is kept; the code is shown once, when it is made.
CREATE TABLE ft.claim_codes (
    id              text PRIMARY KEY CHECK (id ~ '^cc_[0-9a-f]{16}$'),
    tenant_id       text NOT NULL REFERENCES ft.tenants (id),
    code_hash       bytea NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    farm_id         text NOT NULL,
    field_id        text,
    note            text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    used_by         text,             -- who redeemed it (user or API key id)
    used_by_device  text REFERENCES ft.devices (id),
    revoked_at      timestamptz,
    FOREIGN KEY (tenant_id, farm_id) REFERENCES ft.farms (tenant_id, id),
    FOREIGN KEY (tenant_id, farm_id, field_id) REFERENCES ft.fields (tenant_id, farm_id, id),
    CONSTRAINT claim_codes_expiry CHECK (expires_at > created_at),
    CONSTRAINT claim_codes_use CHECK ((used_at IS NULL) = (used_by_device IS NULL))
);
CREATE INDEX claim_codes_tenant ON ft.claim_codes (tenant_id, created_at);

-- ft.users.farmer_id (migration 041) will reference ft.farmers (tenant_id, id) by a later migration, once
-- inviting a farmer user requires the farmer's record (see the report of issue 5's registry work).
