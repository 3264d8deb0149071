-- Who registered each book: the signed-in user (the token's `sub`) whose
-- save created it. Only that user may edit the book while authentication
-- is on. NULL for books registered while it was off (and for the seed):
-- nobody owns those, so with authentication on nobody edits them.
ALTER TABLE books ADD COLUMN registered_by UUID;
