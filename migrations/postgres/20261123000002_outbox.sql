-- Transactional outbox of bus-core (bus_core::outbox::SCHEMA): events staged
-- by command handlers in their own transaction, relayed after commit.
CREATE TABLE IF NOT EXISTS bus_outbox (
    position   BIGSERIAL   PRIMARY KEY,
    envelope   JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
