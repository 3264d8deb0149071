-- Users, books, offers and orders of the marketplace, on SQLite: the same
-- tables as migrations/postgres/, adapted to SQLite's types.
--
-- No foreign keys, as on PostgreSQL. UUIDs are 16-byte BLOBs, prices are
-- INTEGER cents (SQLite has no exact decimal), timestamps are RFC 3339 text
-- in UTC with milliseconds (they sort like the times they encode).

CREATE TABLE users (
    id         BLOB    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- position is the rowid: it grows with each new book, so GET /books pages in
-- registration order and pages are stable. offer_id, price_cents and stock
-- describe the cheapest offer that still has stock (NULL, 0, 0 when none).
CREATE TABLE books (
    position    INTEGER PRIMARY KEY,
    id          BLOB    NOT NULL UNIQUE,
    title       TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    offer_id    BLOB,
    price_cents INTEGER NOT NULL DEFAULT 0,
    stock       INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE offers (
    id          BLOB    NOT NULL PRIMARY KEY,
    book_id     BLOB    NOT NULL,
    seller_id   BLOB    NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- GET /offers/{bookId} (cheapest first) and the cheapest in-stock offer.
CREATE INDEX offers_by_book_price ON offers (book_id, price_cents, id);

CREATE TABLE orders (
    id         BLOB NOT NULL PRIMARY KEY,
    user_id    BLOB NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason     TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE order_items (
    order_id BLOB    NOT NULL,
    offer_id BLOB    NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, offer_id)
) WITHOUT ROWID;
