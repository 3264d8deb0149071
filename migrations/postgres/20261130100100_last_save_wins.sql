-- Saves of a user or a book are applied in the order the API accepted them,
-- whatever order consumers and retries deliver them in: each row keeps the
-- acceptance time of the save it holds (`saved_at`, the envelope's
-- timestamp) and that save's envelope id (`saved_by`, which breaks ties),
-- and an upsert changes the row only for a later save. Rows written before
-- this migration hold the time they were last updated; rows written by
-- other means (the seed) hold -infinity, so any save overwrites them.
ALTER TABLE users
    ADD COLUMN saved_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    ADD COLUMN saved_by UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
UPDATE users SET saved_at = updated_at;

ALTER TABLE books
    ADD COLUMN saved_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    ADD COLUMN saved_by UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
UPDATE books SET saved_at = updated_at;
