//! `GET /books?q=` (search by the words of titles and authors) and
//! `GET /books?after=` (cursor pages), on every bus and both databases.

use std::collections::HashSet;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    helpers::{assert_problem, header, TestApp},
    on_every_bus,
};

/// Registers the books `(title, author)` in this order, each once the one
/// before is readable (so registration order is the order given); returns
/// their ids.
async fn register(app: &TestApp, books: &[(&str, &str)]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for (title, author) in books {
        let id = Uuid::new_v4();
        let response = app
            .put(
                "/book",
                &json!({ "id": id, "title": title, "author": author }),
            )
            .await;
        assert_eq!(response.status(), 200);
        await_readable(app, id).await;
        ids.push(id);
    }
    ids
}

/// Waits until the book `id` can be read.
async fn await_readable(app: &TestApp, id: Uuid) {
    app.eventually(|| async {
        (app.get(&format!("/books/{id}")).await.status() == 200).then_some(())
    })
    .await;
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The titles `GET /books?q=` answers, in its order.
async fn titles_found(app: &TestApp, q: &str) -> Vec<String> {
    let books = app
        .get_json(&format!("/books?pageSize=100&q={}", encode(q)))
        .await;
    books
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|book| book["title"].as_str().expect("a title").to_owned())
        .collect()
}

/// The same titles in a set, for searches whose order is not the point.
async fn found(app: &TestApp, q: &str) -> HashSet<String> {
    titles_found(app, q).await.into_iter().collect()
}

fn set(titles: &[&str]) -> HashSet<String> {
    titles.iter().map(|title| (*title).to_owned()).collect()
}

/// The target of a `Link: <target>; rel="next"` header, if any.
fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = header(response, "link");
    if link.is_empty() {
        return None;
    }
    let target = link
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("a rel=next link: {link}"));
    Some(target.to_owned())
}

/// Ids of the books of a JSON array.
fn ids_of(books: &Value) -> Vec<Uuid> {
    books
        .as_array()
        .expect("an array of books")
        .iter()
        .map(|book| serde_json::from_value(book["id"].clone()).expect("a book id"))
        .collect()
}

/// Follows `Link` headers from `path` to the last page; returns the ids of
/// every page's books, in order, and the pages' bodies.
async fn follow_links(app: &TestApp, path: &str) -> (Vec<Uuid>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        next = next_link(&response);
        let body: Value = response.json().await.expect("JSON");
        let books = if body.is_array() {
            body.clone()
        } else {
            body["items"].clone()
        };
        ids.extend(ids_of(&books));
        bodies.push(body);
        assert!(bodies.len() < 100, "the links never end");
    }
    (ids, bodies)
}

on_every_bus! {
    async fn a_search_matches_words_of_titles_and_authors_whatever_their_case_and_accents(app) {
        register(app, &[
            ("Germinal", "Émile Zola"),
            ("Unvollständigkeitssätze", "Kurt Gödel"),
            ("Dune", "Frank Herbert"),
            ("Dune Messiah", "Frank Herbert"),
            ("The Left Hand of Darkness", "Ursula K. Le Guin"),
            ("Zola, Zola et Zola", "Henri Mitterand"),
        ]).await;
        let zola = set(&["Germinal", "Zola, Zola et Zola"]);
        assert_eq!(found(app, "emile zola").await, set(&["Germinal"]));
        assert_eq!(found(app, "ÉMILE").await, set(&["Germinal"]));
        assert_eq!(found(app, "ZOLA").await, zola);
        assert_eq!(found(app, "godel").await, set(&["Unvollständigkeitssätze"]));
        assert_eq!(found(app, "GÖDEL kurt").await, set(&["Unvollständigkeitssätze"]));
        assert_eq!(found(app, "unvollstandigkeitssatze").await, set(&["Unvollständigkeitssätze"]));
        assert_eq!(found(app, "dune").await, set(&["Dune", "Dune Messiah"]));
        assert_eq!(found(app, "messiah").await, set(&["Dune Messiah"]));
        // The last word is a prefix, as the user types.
        assert_eq!(found(app, "herb").await, set(&["Dune", "Dune Messiah"]));
        assert_eq!(found(app, "dune mess").await, set(&["Dune Messiah"]));
        assert_eq!(found(app, "le gu").await, set(&["The Left Hand of Darkness"]));
        // Only the last word: the others are whole words.
        assert_eq!(found(app, "mess dune").await, set(&[]));
        // Every word must match, and a word is not a part of one.
        assert_eq!(found(app, "zola dune").await, set(&[]));
        assert_eq!(found(app, "arkness").await, set(&[]));
        assert_eq!(found(app, "tolkien").await, set(&[]));
        // The book holding the word three times is the best match.
        assert_eq!(titles_found(app, "zola").await[0], "Zola, Zola et Zola");
    }

    async fn query_syntax_in_a_search_is_only_text(app) {
        register(app, &[("Dune", "Frank Herbert"), ("Near Dark", "Eric Red")]).await;
        for q in [
            "\"", "'", ":*", "&|!()", "*", "\\", "%", "(", "^", "-", "\"\"*",
        ] {
            let response = app.get(&format!("/books?q={}", encode(q))).await;
            let problem = assert_problem(response, 422).await;
            assert_eq!(problem["errors"][0]["field"], "q", "{q}: {problem}");
        }
        for (q, expected) in [
            ("NEAR", &["Near Dark"][..]),
            ("near(dune herbert)", &[]),
            ("\"dune", &["Dune"]),
            ("dune\"", &["Dune"]),
            ("du:*", &["Dune"]),
            ("dune & !herbert", &["Dune"]),
            ("dune | red", &[]),
            ("title:dune", &[]),
            ("dune AND", &[]),
            ("dune OR", &[]),
            ("frank NOT", &[]),
            ("frank' OR '1'='1", &[]),
            ("-dune", &["Dune"]),
            ("dune*", &["Dune"]),
            ("{author}: herb", &[]),
            ("{title}:", &[]),
            ("d'", &["Dune", "Near Dark"]),
        ] {
            let response = app.get(&format!("/books?q={}", encode(q))).await;
            assert_eq!(response.status(), 200, "{q}");
            let titles: HashSet<String> = response.json::<Value>().await.unwrap().as_array().unwrap()
                .iter().map(|book| book["title"].as_str().unwrap().to_owned()).collect();
            assert_eq!(titles, set(expected), "{q}");
        }
        for q in ["", "   ", &"a".repeat(201), "a b c d e f g h i"] {
            let response = app.get(&format!("/books?q={}", encode(q))).await;
            let problem = assert_problem(response, 422).await;
            assert_eq!(problem["errors"][0]["field"], "q", "{q:?}: {problem}");
        }
        assert_eq!(app.get(&format!("/books?q={}", "a".repeat(200))).await.status(), 200);
        assert_eq!(app.get("/books?q=a+b+c+d+e+f+g+h").await.status(), 200);
    }

    async fn cursor_pages_walk_the_catalogue_once_while_books_are_added(app) {
        let titles: Vec<String> = (0..23).map(|n| format!("Volume {n}")).collect();
        let books: Vec<(&str, &str)> = titles.iter().map(|title| (title.as_str(), "Anon")).collect();
        let before = register(app, &books).await;
        // A new book between the walk's pages: it may or may not be seen,
        // the books there before the walk are seen once each.
        let walk = async {
            let mut seen = Vec::new();
            let mut after = String::new();
            let mut added = Vec::new();
            loop {
                let response = app.get(&format!("/books?pageSize=4&after={after}")).await;
                assert_eq!(response.status(), 200);
                let link = next_link(&response);
                let page: Value = response.json().await.unwrap();
                assert!(page["items"].as_array().unwrap().len() <= 4, "{page}");
                seen.extend(ids_of(&page["items"]));
                let id = Uuid::new_v4();
                let put = app.put("/book", &json!({ "id": id, "title": "Late", "author": "Anon" })).await;
                assert_eq!(put.status(), 200);
                added.push(id);
                match page["next"].as_str() {
                    Some(next) => {
                        assert_eq!(link, Some(format!("/books?pageSize=4&after={next}")));
                        after = next.to_owned();
                    }
                    None => {
                        assert_eq!(link, None);
                        return (seen, added);
                    }
                }
                assert!(seen.len() < 1000, "the walk never ends");
            }
        };
        let (seen, added) = walk.await;
        let unique: HashSet<Uuid> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a book listed twice");
        // Every book there before the walk, first, in registration order;
        // after them only books added during the walk.
        assert_eq!(seen[..before.len()], before[..]);
        for id in &seen[before.len()..] {
            assert!(added.contains(id), "{id} was never registered");
        }
        for id in &added {
            await_readable(app, *id).await;
        }
        // Following the Link headers walks the same catalogue, now whole.
        let (linked, bodies) = follow_links(app, "/books?pageSize=10&after=").await;
        let everything: HashSet<Uuid> = before.iter().chain(&added).copied().collect();
        assert_eq!(linked.len(), everything.len());
        assert_eq!(linked.iter().copied().collect::<HashSet<_>>(), everything);
        assert_eq!(linked[..before.len()], before[..]);
        assert_eq!(bodies.last().unwrap()["next"], Value::Null);
    }

    async fn search_pages_follow_the_rank_and_their_links(app) {
        let mut books: Vec<(String, String)> = (0..11)
            .map(|n| (format!("Saga {n}"), "Éva Åström".to_owned()))
            .collect();
        books.push(("Saga Saga Saga".to_owned(), "Éva Åström".to_owned()));
        books.push(("Unrelated".to_owned(), "Nobody".to_owned()));
        let pairs: Vec<(&str, &str)> = books.iter().map(|(t, a)| (t.as_str(), a.as_str())).collect();
        let ids = register(app, &pairs).await;
        let sagas: HashSet<Uuid> = ids[..12].iter().copied().collect();
        let q = "Saga åst";
        let whole = ids_of(&app.get_json(&format!("/books?pageSize=100&q={}", encode(q))).await);
        assert_eq!(whole.iter().copied().collect::<HashSet<_>>(), sagas);
        assert_eq!(whole[0], ids[11], "the best match first");

        // Numbered pages: the Link keeps q, percent-encoded.
        let first = app.get(&format!("/books?pageSize=5&q={}", encode(q))).await;
        assert_eq!(
            next_link(&first).as_deref(),
            Some("/books?page=2&pageSize=5&q=Saga%20%C3%A5st")
        );
        let (numbered, _) = follow_links(app, &format!("/books?pageSize=5&q={}", encode(q))).await;
        assert_eq!(numbered, whole);

        // Cursor pages: the same books, in the same order.
        let (cursored, bodies) =
            follow_links(app, &format!("/books?pageSize=5&q={}&after=", encode(q))).await;
        assert_eq!(cursored, whole);
        assert_eq!(bodies.len(), 3);
        assert_eq!(bodies[2]["next"], Value::Null);

        // A search's cursor does not page the catalogue, nor the reverse.
        let cursor = bodies[0]["next"].as_str().unwrap().to_owned();
        let problem = assert_problem(app.get(&format!("/books?after={cursor}")).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "after");
        let plain: Value = app.get_json("/books?pageSize=2&after=").await;
        let cursor = plain["next"].as_str().unwrap().to_owned();
        let problem = assert_problem(app.get(&format!("/books?q=saga&after={cursor}")).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "after");
    }

    async fn numbered_pages_link_the_next_and_bad_cursors_are_422(app) {
        let ids = register(app, &[("A", "X"), ("B", "X"), ("C", "X")]).await;
        // Without the new parameters: the same JSON array as always.
        let all = app.get("/books").await;
        assert_eq!(next_link(&all), None);
        assert_eq!(ids_of(&all.json::<Value>().await.unwrap()), ids);
        let first = app.get("/books?pageSize=2").await;
        assert_eq!(next_link(&first).as_deref(), Some("/books?page=2&pageSize=2"));
        let (walked, bodies) = follow_links(app, "/books?pageSize=2").await;
        assert_eq!(walked, ids);
        assert!(bodies.iter().all(Value::is_array));

        for after in ["nonsense", "bm90IGpzb24", "eyJyIjpbMSwiYSJdfQ", &"A".repeat(600)] {
            let problem = assert_problem(app.get(&format!("/books?after={after}")).await, 422).await;
            assert_eq!(problem["errors"][0]["field"], "after", "{after}");
        }
        let problem = assert_problem(app.get("/books?page=2&after=").await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "page");
        assert_problem(app.get("/books?pageSize=101&after=").await, 422).await;
        assert_problem(app.get("/books?pageSize=0&after=").await, 422).await;
        let page: Value = app.get_json("/books?after=").await;
        assert_eq!(ids_of(&page["items"]), ids);
        assert_eq!(page["next"], Value::Null);
    }
}
