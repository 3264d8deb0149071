-- Who registered each book, as on PostgreSQL: the signed-in user (16
-- bytes) whose save created it; NULL for books registered while
-- authentication was off, which nobody owns.
ALTER TABLE books ADD COLUMN registered_by BLOB;
