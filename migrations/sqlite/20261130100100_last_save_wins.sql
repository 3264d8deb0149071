-- Saves of a user or a book are applied in the order the API accepted them,
-- as on PostgreSQL: `saved_at` is the envelope's timestamp as RFC 3339 text
-- in UTC with microseconds (so text order is time order), `saved_by` the
-- envelope id (16 bytes, breaks ties). Rows written before this migration
-- hold the time they were last updated; rows written by other means (the
-- seed) hold '', so any save overwrites them.
ALTER TABLE users ADD COLUMN saved_at TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN saved_by BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';
UPDATE users SET saved_at = substr(updated_at, 1, 23) || '000Z';

ALTER TABLE books ADD COLUMN saved_at TEXT NOT NULL DEFAULT '';
ALTER TABLE books ADD COLUMN saved_by BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';
UPDATE books SET saved_at = substr(updated_at, 1, 23) || '000Z';
