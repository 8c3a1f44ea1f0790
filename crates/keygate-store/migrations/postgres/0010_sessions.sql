-- Sandbox sessions: a session is an API token (proxy-only, always expiring; its id is the
-- session's id) with the rules below. Usage rows name the session that made the call.
CREATE TABLE sessions (
    token_id     UUID   PRIMARY KEY REFERENCES api_tokens (id),
    -- Catalog provider ids, space-separated.
    providers    TEXT   NOT NULL,
    max_requests BIGINT CHECK (max_requests > 0),
    max_tokens   BIGINT CHECK (max_tokens > 0)
);
ALTER TABLE usage_events ADD COLUMN session_id UUID;
CREATE INDEX usage_events_session ON usage_events (session_id) WHERE session_id IS NOT NULL;
-- A session's counters when PostgreSQL is the limits backend (no Redis): requests
-- admitted and tokens used (reservations included) over the session's life. Rows go once
-- the session has expired.
CREATE TABLE limit_sessions (
    session_id    UUID        PRIMARY KEY,
    requests      BIGINT      NOT NULL,
    tokens        BIGINT      NOT NULL,
    last_reserved BIGINT      NOT NULL DEFAULT 0,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX limit_sessions_expires ON limit_sessions (expires_at);
