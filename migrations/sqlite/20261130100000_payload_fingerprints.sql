-- Offers and orders are written once per client id. Each keeps the
-- fingerprint (SHA-256, hex) of the payload that created it, so that the
-- same id sent again with another payload is recognised as a conflict
-- instead of being taken for a redelivery. Rows written before this
-- migration have none and are taken as matching any payload.
ALTER TABLE offers ADD COLUMN fingerprint TEXT;
ALTER TABLE orders ADD COLUMN fingerprint TEXT;
