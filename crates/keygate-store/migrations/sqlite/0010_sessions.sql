-- Sandbox sessions: a session is an API token (proxy-only, always expiring; its id is the
-- session's id) with the rules below. Usage rows name the session that made the call.
-- (Session counters live in the process on SQLite, seeded from these usage rows.)
CREATE TABLE sessions (
    token_id     BLOB    PRIMARY KEY REFERENCES api_tokens (id),
    -- Catalog provider ids, space-separated.
    providers    TEXT    NOT NULL,
    max_requests INTEGER CHECK (max_requests > 0),
    max_tokens   INTEGER CHECK (max_tokens > 0)
);
ALTER TABLE usage_events ADD COLUMN session_id BLOB;
CREATE INDEX usage_events_session ON usage_events (session_id) WHERE session_id IS NOT NULL;
