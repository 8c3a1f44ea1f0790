-- When each user first drew on the operator's demo allowance (it lasts N days from then).
CREATE TABLE demo_first_use (
    user_id       UUID PRIMARY KEY,
    first_used_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_events_source_at ON usage_events (key_source, at);
