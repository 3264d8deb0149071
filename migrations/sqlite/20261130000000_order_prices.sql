-- What each order was charged, in cents, as on PostgreSQL: every line's
-- unit price when its stock was claimed and its total, and the order's
-- total. A rejected order charges nothing: its lines have no price and its
-- total is 0.
ALTER TABLE order_items ADD COLUMN unit_price_cents INTEGER;
ALTER TABLE order_items ADD COLUMN total_cents INTEGER;
ALTER TABLE orders ADD COLUMN total_cents INTEGER NOT NULL DEFAULT 0;

-- Offers are never edited, so orders confirmed before this migration were
-- charged their offers' current prices.
UPDATE order_items
   SET unit_price_cents = (SELECT price_cents FROM offers WHERE offers.id = order_items.offer_id),
       total_cents = quantity * (SELECT price_cents FROM offers WHERE offers.id = order_items.offer_id)
 WHERE order_id IN (SELECT id FROM orders WHERE status = 'confirmed');
UPDATE orders
   SET total_cents = (SELECT coalesce(sum(total_cents), 0) FROM order_items
                       WHERE order_items.order_id = orders.id)
 WHERE status = 'confirmed';
