-- The queue of bus-core's durable bus (bus_core::durable::postgres::SCHEMA):
-- one row per message and handler (an event has one per subscriber), deleted
-- once handled, rescheduled (attempt, not_before) on a retryable failure,
-- moved to bus_dead_letters when given up on.
CREATE TABLE IF NOT EXISTS bus_messages (
    id           BIGSERIAL   PRIMARY KEY,
    message_id   UUID        NOT NULL,
    message_type TEXT        NOT NULL,
    subscriber   TEXT,
    envelope     JSONB       NOT NULL,
    attempt      INTEGER     NOT NULL DEFAULT 1,
    not_before   TIMESTAMPTZ NOT NULL DEFAULT now(),
    enqueued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS bus_messages_due ON bus_messages (not_before);
