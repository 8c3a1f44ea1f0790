-- Limit counters shared by every replica when PostgreSQL is the limits backend (no Redis).
-- Demo tokens per user per UTC day; `last_reserved` returns what one reservation took.
CREATE TABLE limit_tokens (
    user_id       UUID    NOT NULL,
    day           DATE    NOT NULL,
    used          BIGINT  NOT NULL,
    last_reserved BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);
-- Tier requests: today's count, and the admission times (microseconds since the epoch)
-- within the sliding minute.
CREATE TABLE limit_requests (
    user_id   UUID     PRIMARY KEY,
    day       DATE     NOT NULL,
    day_count INTEGER  NOT NULL,
    stamps    BIGINT[] NOT NULL
);
