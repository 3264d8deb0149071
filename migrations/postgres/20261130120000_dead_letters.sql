-- Dead letters of the in-process async bus (bus_core::DEAD_LETTERS_POSTGRES_SCHEMA):
-- one row per message given up on, kept across restarts.
CREATE TABLE IF NOT EXISTS bus_dead_letters (
    id               UUID        PRIMARY KEY,
    message_id       UUID        NOT NULL,
    message_type     TEXT        NOT NULL,
    subscriber       TEXT,
    reason           TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL,
    envelope         JSONB       NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_dead_letters_by_time ON bus_dead_letters (dead_lettered_at);
