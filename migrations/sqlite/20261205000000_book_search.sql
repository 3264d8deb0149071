-- GET /books?q=: full-text search over each book's title and author,
-- ignoring case and accents (FTS5, unicode61 with diacritics removed).
--
-- An external-content table: it indexes books' rows (rowid = position)
-- without a copy of their text, kept in step by the triggers below.
CREATE VIRTUAL TABLE books_search USING fts5(
    title, author,
    content = 'books', content_rowid = 'position',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER books_search_insert AFTER INSERT ON books BEGIN
    INSERT INTO books_search (rowid, title, author)
    VALUES (new.position, new.title, new.author);
END;

CREATE TRIGGER books_search_delete AFTER DELETE ON books BEGIN
    INSERT INTO books_search (books_search, rowid, title, author)
    VALUES ('delete', old.position, old.title, old.author);
END;

CREATE TRIGGER books_search_update AFTER UPDATE OF title, author ON books BEGIN
    INSERT INTO books_search (books_search, rowid, title, author)
    VALUES ('delete', old.position, old.title, old.author);
    INSERT INTO books_search (rowid, title, author)
    VALUES (new.position, new.title, new.author);
END;

-- The books already there.
INSERT INTO books_search (books_search) VALUES ('rebuild');
