-- Transactional outbox of bus-core (bus_core::outbox::sqlite::SCHEMA): events
-- staged by command handlers in their own transaction, relayed after commit.
CREATE TABLE IF NOT EXISTS bus_outbox (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope   TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
