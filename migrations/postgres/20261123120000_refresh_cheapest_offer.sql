-- Recomputes a book's cheapest in-stock offer in one call (one round trip).
-- The book row is locked first; the function is VOLATILE, so under READ
-- COMMITTED the UPDATE takes a new snapshot after the lock was granted and
-- sees every offer committed before any concurrent refresh of the same book.
CREATE OR REPLACE FUNCTION refresh_cheapest_offer(target UUID) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM books WHERE id = target FOR UPDATE;
    UPDATE books SET offer_id   = cheapest.id,
                     price      = COALESCE(cheapest.price, 0),
                     stock      = COALESCE(cheapest.stock, 0),
                     updated_at = now()
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT o.id, o.price, o.stock FROM offers o
        WHERE o.book_id = target AND o.stock > 0
        ORDER BY o.price, o.id LIMIT 1
    ) AS cheapest ON true
    WHERE books.id = target
      AND (books.offer_id, books.price, books.stock)
          IS DISTINCT FROM (cheapest.id, COALESCE(cheapest.price, 0), COALESCE(cheapest.stock, 0));
END
$$;
