-- What each order was charged: every line's unit price when its stock was
-- claimed and its total, and the order's total. A rejected order charges
-- nothing: its lines have no price and its total is 0. Totals get more
-- digits than prices: up to 50 lines of 1,000,000 copies at 1,000,000,000.
ALTER TABLE order_items
    ADD COLUMN unit_price NUMERIC(12,2),
    ADD COLUMN total      NUMERIC(20,2);
ALTER TABLE orders ADD COLUMN total NUMERIC(20,2) NOT NULL DEFAULT 0;

-- Offers are never edited, so orders confirmed before this migration were
-- charged their offers' current prices.
UPDATE order_items i
   SET unit_price = o.price, total = o.price * i.quantity
  FROM offers o, orders r
 WHERE o.id = i.offer_id AND r.id = i.order_id AND r.status = 'confirmed';
UPDATE orders r
   SET total = lines.total
  FROM (SELECT order_id, sum(total) AS total FROM order_items GROUP BY order_id) lines
 WHERE lines.order_id = r.id AND r.status = 'confirmed';
