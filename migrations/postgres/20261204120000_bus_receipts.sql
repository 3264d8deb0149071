-- The receipts of bus-core's durable bus (bus_core::durable::postgres::SCHEMA):
-- a handler records the receipt of the bus_messages row it applies in the
-- transaction of its effect, so the effect and the acknowledgement commit
-- together. A row whose receipt exists is done: the consumer deletes both
-- without running the handler again. The reference fences a consumer that
-- lost its claim (the row settled by another one: its receipt fails).
CREATE TABLE IF NOT EXISTS bus_receipts (
    message_row BIGINT      PRIMARY KEY REFERENCES bus_messages (id) ON DELETE CASCADE,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
