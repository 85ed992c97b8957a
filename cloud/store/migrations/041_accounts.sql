-- Accounts (version 41): users of a tenant and their sessions, partners' API keys, rate-limit counters and
-- failed sign-in counters.  The code that uses them is cloud/auth (one module per concern).
--
-- Platform admins are not users: they are the FIELDTRUST_ADMIN_TOKEN bearer, so every row here belongs to a
-- tenant and row-level security (cloud.store.tenancy, applied after every migration run) covers it.  Two
-- tables hold no tenant: rate-limit buckets and per-source sign-in counters, which count before any tenant is
-- known (or across tenants, which is their point).
--
-- Before a tenant is known (a sign-in names a tenant and a login but has proven nothing yet; a bearer token
-- or API key names no tenant at all) the service role can see no tenant row.  The few lookups it needs then
-- are the SECURITY DEFINER functions at the end, which return the one row asked for and only its needed
-- columns.  Everything after the lookup runs in the found tenant's scope.

-- The roles here are cloud/auth/principal.py's Role minus platform_admin (tests/test_auth_signin.py checks
-- the two lists agree).
CREATE TABLE ft.users (
    id                 text PRIMARY KEY CHECK (id ~ '^u_[0-9a-f]{16}$'),
    tenant_id          text NOT NULL REFERENCES ft.tenants (id),
    login              text NOT NULL CHECK (login ~ '^[a-z0-9][a-z0-9_.@+-]{0,127}$'),  -- lower case: unique as typed
    display_name       text NOT NULL DEFAULT '',
    roles              text[] NOT NULL CHECK (
                           cardinality(roles) > 0
                           AND roles <@ ARRAY['farmer', 'clerk', 'technician', 'credit_officer', 'ops',
                                              'tenant_admin']::text[]),
    farmer_id          text,            -- the farmer's own record (ft.farmers, migration 044 adds the FK)
    password_hash      text,            -- argon2id, PHC string
    pin_hash           text,            -- argon2id, PHC string (farmers' 6-digit PIN)
    status             text NOT NULL DEFAULT 'invited' CHECK (status IN ('invited', 'active', 'disabled')),
    invite_token_hash  bytea UNIQUE,    -- SHA-256 of the invite token, until the invite is accepted
    invite_expires_at  timestamptz,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, login),
    UNIQUE (tenant_id, farmer_id),
    UNIQUE (tenant_id, id),            -- target of the sessions' (tenant_id, user_id) reference
    CHECK (NOT ('farmer' = ANY (roles)) OR farmer_id IS NOT NULL),
    CHECK (status <> 'active' OR password_hash IS NOT NULL OR pin_hash IS NOT NULL)
);

-- A signed-in browser or app.  The token itself is never stored: its SHA-256 is the key.
CREATE TABLE ft.sessions (
    token_hash    bytea PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES ft.tenants (id),
    user_id       text NOT NULL,
    csrf_secret   text NOT NULL,        -- the synchronizer token of cookie-authenticated requests
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,  -- absolute end, whatever the activity
    last_seen_at  timestamptz NOT NULL DEFAULT now(),  -- idle end = last_seen_at + idle limit
    source_ip     text,
    user_agent    text,
    FOREIGN KEY (tenant_id, user_id) REFERENCES ft.users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON ft.sessions (user_id);

-- Partners' keys: ftk_<prefix>_<secret>.  The prefix finds the row, the secret's SHA-256 proves the key.
CREATE TABLE ft.api_keys (
    id             text PRIMARY KEY CHECK (id ~ '^k_[0-9a-f]{16}$'),
    tenant_id      text NOT NULL REFERENCES ft.tenants (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix         text NOT NULL UNIQUE CHECK (prefix ~ '^[0-9a-f]{12}$'),
    secret_hash    bytea NOT NULL,
    scopes         text[] NOT NULL CHECK (cardinality(scopes) > 0),
    rate_limit     integer NOT NULL CHECK (rate_limit > 0),      -- requests per window
    rate_window_s  integer NOT NULL CHECK (rate_window_s > 0),
    expires_at     timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant ON ft.api_keys (tenant_id);

-- Fixed-window request counters shared by every API process: one row per bucket ('key:<id>', 'user:<id>'),
-- its window restarting at the first request after the previous window ended (cloud/auth/rate_limit.py).
-- Platform table: buckets are counted before a route sets any tenant scope.
CREATE TABLE ft.rate_limits (
    bucket        text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL CHECK (count >= 0)
);
CREATE INDEX rate_limits_window ON ft.rate_limits (window_start);

-- Consecutive failed sign-ins per account name as typed (also for names that do not exist, so the answers
-- do not tell which exist; hence no reference to ft.tenants or ft.users) and per source address.
CREATE TABLE ft.signin_accounts (
    tenant_id        text NOT NULL,
    account          text NOT NULL,      -- the login, or 'farmer:<farmer id>' for PIN sign-in
    failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at  timestamptz,
    next_allowed_at  timestamptz,
    locked_at        timestamptz,        -- set after too many failures: a clerk's unlock clears it
    PRIMARY KEY (tenant_id, account)
);

CREATE TABLE ft.signin_sources (
    source           text PRIMARY KEY,   -- the client's address
    failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at  timestamptz,
    next_allowed_at  timestamptz
);

-- Lookups before a tenant scope exists.  Each returns one row's needed columns; none lists or searches.

CREATE FUNCTION ft.auth_user_by_login(p_tenant text, p_login text)
    RETURNS TABLE (id text, tenant_id text, roles text[], farmer_id text, secret_hash text, status text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ft, pg_temp
    AS $$
        SELECT u.id, u.tenant_id, u.roles, u.farmer_id, u.password_hash, u.status
        FROM ft.users u WHERE u.tenant_id = p_tenant AND u.login = p_login
    $$;

CREATE FUNCTION ft.auth_user_by_farmer(p_tenant text, p_farmer_id text)
    RETURNS TABLE (id text, tenant_id text, roles text[], farmer_id text, secret_hash text, status text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ft, pg_temp
    AS $$
        SELECT u.id, u.tenant_id, u.roles, u.farmer_id, u.pin_hash, u.status
        FROM ft.users u WHERE u.tenant_id = p_tenant AND u.farmer_id = p_farmer_id
    $$;

-- A live session of an active user (expired, idle or disabled: nothing).
CREATE FUNCTION ft.auth_session(p_token_hash bytea, p_idle interval)
    RETURNS TABLE (user_id text, tenant_id text, roles text[], farmer_id text, csrf_secret text,
                   expires_at timestamptz, last_seen_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ft, pg_temp
    AS $$
        SELECT s.user_id, s.tenant_id, u.roles, u.farmer_id, s.csrf_secret, s.expires_at, s.last_seen_at
        FROM ft.sessions s JOIN ft.users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id
        WHERE s.token_hash = p_token_hash AND s.expires_at > now() AND s.last_seen_at > now() - p_idle
          AND u.status = 'active'
    $$;

-- A key by its prefix, whatever its state: the caller tells expired and revoked keys apart (and audits them).
CREATE FUNCTION ft.auth_api_key(p_prefix text)
    RETURNS TABLE (id text, tenant_id text, scopes text[], secret_hash bytea, rate_limit integer,
                   rate_window_s integer, expires_at timestamptz, revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ft, pg_temp
    AS $$
        SELECT k.id, k.tenant_id, k.scopes, k.secret_hash, k.rate_limit, k.rate_window_s, k.expires_at, k.revoked_at
        FROM ft.api_keys k WHERE k.prefix = p_prefix
    $$;

-- An open invitation by its token's hash.
CREATE FUNCTION ft.auth_invite(p_token_hash bytea)
    RETURNS TABLE (id text, tenant_id text, login text, roles text[], invite_expires_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ft, pg_temp
    AS $$
        SELECT u.id, u.tenant_id, u.login, u.roles, u.invite_expires_at
        FROM ft.users u WHERE u.invite_token_hash = p_token_hash AND u.status = 'invited'
    $$;

REVOKE EXECUTE ON FUNCTION ft.auth_user_by_login(text, text), ft.auth_user_by_farmer(text, text),
    ft.auth_session(bytea, interval), ft.auth_api_key(text), ft.auth_invite(bytea) FROM PUBLIC;
-- ft_app is granted EXECUTE by cloud.store.tenancy's pass after the migration run (nobody else may call them).
