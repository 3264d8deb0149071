-- The queue of bus-core's durable bus (bus_core::durable::sqlite::SCHEMA):
-- one row per message and handler (an event has one per subscriber), deleted
-- once handled, rescheduled (attempt, not_before in Unix milliseconds) on a
-- retryable failure, moved to bus_dead_letters when given up on.
CREATE TABLE IF NOT EXISTS bus_messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    message_type TEXT    NOT NULL,
    subscriber   TEXT,
    envelope     TEXT    NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 1,
    not_before   INTEGER NOT NULL,
    enqueued_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS bus_messages_due ON bus_messages (not_before);
