-- keygate's initial schema (PostgreSQL). Ids are UUIDv7; timestamps TIMESTAMPTZ.
-- A shipped migration is never edited: add a new one.

CREATE TABLE meta (
    key        TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspaces (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'paused', 'cancelled', 'deleted')),
    personal   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT UNIQUE,
    external_id   TEXT UNIQUE,
    tier          TEXT NOT NULL,
    super_admin   BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE memberships (
    workspace_id UUID NOT NULL REFERENCES workspaces (id),
    user_id      UUID NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE data_keys (
    id           UUID PRIMARY KEY,
    owner        TEXT NOT NULL UNIQUE,
    kek_id       TEXT NOT NULL,
    wrapped      BYTEA,
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    destroyed_at TIMESTAMPTZ
);
CREATE INDEX data_keys_kek ON data_keys (kek_id);

CREATE TABLE credentials (
    id                  UUID PRIMARY KEY,
    scope               TEXT NOT NULL CHECK (scope IN ('user', 'workspace', 'operator')),
    workspace_id        UUID REFERENCES workspaces (id),
    owner_user_id       UUID REFERENCES users (id),
    owner_key           TEXT NOT NULL,
    provider            TEXT NOT NULL,
    name                TEXT NOT NULL,
    hint                TEXT NOT NULL,
    model               TEXT,
    status              TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    validity            TEXT NOT NULL CHECK (validity IN ('valid', 'invalid', 'unverified', 'undecryptable')),
    validity_detail     TEXT,
    validity_checked_at TIMESTAMPTZ,
    operator_shared     BOOLEAN NOT NULL DEFAULT FALSE,
    sealed              BYTEA NOT NULL,
    data_key_id         UUID NOT NULL REFERENCES data_keys (id),
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    last_used_at        TIMESTAMPTZ,
    usage_requests      BIGINT NOT NULL DEFAULT 0,
    usage_input_tokens  BIGINT NOT NULL DEFAULT 0,
    usage_output_tokens BIGINT NOT NULL DEFAULT 0,
    usage_cost_nano_usd BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX credentials_one_active_per_provider
    ON credentials (owner_key, provider) WHERE status = 'active';
CREATE INDEX credentials_workspace ON credentials (workspace_id);
CREATE INDEX credentials_owner_user ON credentials (owner_user_id);

CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    public_id    TEXT NOT NULL UNIQUE,
    secret_hash  BYTEA NOT NULL,
    user_id      UUID NOT NULL REFERENCES users (id),
    workspace_id UUID REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- History tables carry no foreign keys: they outlive what they describe.
CREATE TABLE audit_events (
    id            UUID PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL,
    actor_user_id UUID,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT,
    workspace_id  UUID,
    source_addr   TEXT,
    result        TEXT NOT NULL,
    detail        TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_target ON audit_events (target_type, target_id);

CREATE TABLE usage_events (
    id            UUID PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL,
    user_id       UUID,
    workspace_id  UUID,
    credential_id UUID,
    key_source    TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nano_usd BIGINT NOT NULL,
    status        INTEGER NOT NULL,
    latency_ms    BIGINT NOT NULL
);
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
CREATE INDEX usage_events_credential_at ON usage_events (credential_id, at);
