-- The receipts of bus-core's durable bus (bus_core::durable::sqlite::SCHEMA):
-- a handler records the receipt of the bus_messages row it applies in the
-- transaction of its effect, so the effect and the acknowledgement commit
-- together. A row whose receipt exists is done: the consumer deletes both
-- without running the handler again.
CREATE TABLE IF NOT EXISTS bus_receipts (
    message_row INTEGER PRIMARY KEY REFERENCES bus_messages (id) ON DELETE CASCADE,
    recorded_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
