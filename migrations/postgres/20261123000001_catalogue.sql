-- Users, books, offers and orders of the marketplace.
--
-- No foreign keys, on purpose: commands travel on different queues and are
-- applied by concurrent consumers, so an offer may be written before its book
-- is visible to another transaction. Consistency comes from the handlers
-- (an offer waits, through retries, for its book and seller) and from atomic
-- conditional updates (stock is never claimed below zero).

CREATE TABLE users (
    id         UUID        PRIMARY KEY,
    name       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- offer_id, price and stock describe the cheapest offer that still has stock;
-- event subscribers keep them up to date (NULL, 0, 0 when there is none).
CREATE TABLE books (
    id         UUID          PRIMARY KEY,
    title      TEXT          NOT NULL,
    author     TEXT          NOT NULL,
    offer_id   UUID,
    price      NUMERIC(12,2) NOT NULL DEFAULT 0,
    stock      INTEGER       NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ   NOT NULL DEFAULT now()
);
-- GET /books pages in creation order; new books append, so pages are stable.
CREATE INDEX books_listing ON books (created_at, id);

CREATE TABLE offers (
    id         UUID          PRIMARY KEY,
    book_id    UUID          NOT NULL,
    seller_id  UUID          NOT NULL,
    price      NUMERIC(12,2) NOT NULL CHECK (price > 0),
    stock      INTEGER       NOT NULL CHECK (stock >= 0),
    created_at TIMESTAMPTZ   NOT NULL DEFAULT now()
);
-- GET /offers/{bookId} (cheapest first) and the cheapest in-stock offer.
CREATE INDEX offers_by_book_price ON offers (book_id, price, id);

CREATE TABLE orders (
    id         UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL,
    status     TEXT        NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id UUID    NOT NULL,
    offer_id UUID    NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, offer_id)
);
