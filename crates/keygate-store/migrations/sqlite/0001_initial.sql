-- keygate's initial schema (SQLite). Ids are UUIDv7 as 16-byte blobs; timestamps are
-- fixed-width RFC 3339 UTC text (YYYY-MM-DDTHH:MM:SS.ffffffZ) so they sort and compare
-- as text. A shipped migration is never edited: add a new one.

CREATE TABLE meta (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'paused', 'cancelled', 'deleted')),
    personal   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    email         TEXT UNIQUE,
    external_id   TEXT UNIQUE,
    tier          TEXT NOT NULL,
    super_admin   BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE memberships (
    workspace_id BLOB NOT NULL REFERENCES workspaces (id),
    user_id      BLOB NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE data_keys (
    id           BLOB PRIMARY KEY,
    owner        TEXT NOT NULL UNIQUE,
    kek_id       TEXT NOT NULL,
    wrapped      BLOB,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    destroyed_at TEXT
);
CREATE INDEX data_keys_kek ON data_keys (kek_id);

CREATE TABLE credentials (
    id                  BLOB PRIMARY KEY,
    scope               TEXT NOT NULL CHECK (scope IN ('user', 'workspace', 'operator')),
    workspace_id        BLOB REFERENCES workspaces (id),
    owner_user_id       BLOB REFERENCES users (id),
    owner_key           TEXT NOT NULL,
    provider            TEXT NOT NULL,
    name                TEXT NOT NULL,
    hint                TEXT NOT NULL,
    model               TEXT,
    status              TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    validity            TEXT NOT NULL CHECK (validity IN ('valid', 'invalid', 'unverified', 'undecryptable')),
    validity_detail     TEXT,
    validity_checked_at TEXT,
    operator_shared     BOOLEAN NOT NULL DEFAULT FALSE,
    sealed              BLOB NOT NULL,
    data_key_id         BLOB NOT NULL REFERENCES data_keys (id),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    last_used_at        TEXT,
    usage_requests      INTEGER NOT NULL DEFAULT 0,
    usage_input_tokens  INTEGER NOT NULL DEFAULT 0,
    usage_output_tokens INTEGER NOT NULL DEFAULT 0,
    usage_cost_nano_usd INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX credentials_one_active_per_provider
    ON credentials (owner_key, provider) WHERE status = 'active';
CREATE INDEX credentials_workspace ON credentials (workspace_id);
CREATE INDEX credentials_owner_user ON credentials (owner_user_id);

CREATE TABLE api_tokens (
    id           BLOB PRIMARY KEY,
    public_id    TEXT NOT NULL UNIQUE,
    secret_hash  BLOB NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id),
    workspace_id BLOB REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    expires_at   TEXT,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- History tables carry no foreign keys: they outlive what they describe.
CREATE TABLE audit_events (
    id            BLOB PRIMARY KEY,
    at            TEXT NOT NULL,
    actor_user_id BLOB,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT,
    workspace_id  BLOB,
    source_addr   TEXT,
    result        TEXT NOT NULL,
    detail        TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_target ON audit_events (target_type, target_id);

CREATE TABLE usage_events (
    id            BLOB PRIMARY KEY,
    at            TEXT NOT NULL,
    user_id       BLOB,
    workspace_id  BLOB,
    credential_id BLOB,
    key_source    TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_nano_usd INTEGER NOT NULL,
    status        INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL
);
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
CREATE INDEX usage_events_credential_at ON usage_events (credential_id, at);
