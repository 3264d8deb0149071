-- GET /books?q=: full-text search over each book's title and author,
-- ignoring case and accents.
--
-- unaccent is a trusted extension: the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;

-- The text a search compares: accents removed, lower case. IMMUTABLE (the
-- dictionary is named, not looked up through search_path) so that a
-- generated column may use it.
CREATE FUNCTION books_fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- The words of a search (split by the API: letters, digits and combining
-- marks only) as a tsquery: every word, folded as the books are, the last
-- one as a prefix. Each word is quoted as a tsquery literal, so no text
-- can be read as tsquery syntax; a word that folds to nothing is dropped.
CREATE FUNCTION books_search_query(words text[]) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT to_tsquery('simple', coalesce(string_agg(
               '''' || replace(replace(folded, '\', '\\'), '''', '''''') || ''''
                    || CASE WHEN n = cardinality(words) THEN ':*' ELSE '' END,
               ' & ' ORDER BY n), ''))
      FROM unnest(words) WITH ORDINALITY AS word(raw, n)
     CROSS JOIN LATERAL (SELECT books_fold(raw) AS folded) AS f
     WHERE btrim(folded) <> ''
    $$;

-- Each book's words, folded; the 'simple' configuration keeps every word
-- (no stemming, no stop words), as a title or a name needs.
ALTER TABLE books ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', books_fold(title || ' ' || author))) STORED;

CREATE INDEX books_search ON books USING gin (search);
