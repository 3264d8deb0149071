-- A user's own lists, newest first, as on PostgreSQL: GET /users/{id}/orders
-- reads a buyer's orders and GET /users/{id}/offers a seller's offers by
-- (created_at, id) descending, a page at a time from the position of the
-- previous page's last row; each page is one range of these indexes.
CREATE INDEX orders_by_user ON orders (user_id, created_at, id);
CREATE INDEX offers_by_seller ON offers (seller_id, created_at, id);
