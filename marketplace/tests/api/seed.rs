//! `marketplace seed` makes a catalogue the API serves like any other.

use marketplace::{
    config::{BusKind, DatabaseConfig, SeedConfig},
    seed::{author_of, seed, title_of, Seeded},
};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_seeded_catalogue_is_listed_with_each_books_cheapest_offer(pool: PgPool) {
    let config = small_catalogue();
    let seeded = seed(&pool, &config).await.unwrap();
    assert_eq!(seeded, SMALL_CATALOGUE);

    // Every book carries its cheapest in-stock offer, as the subscriber would.
    let (wrong,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM books b
         WHERE b.offer_id IS DISTINCT FROM (SELECT id FROM offers o WHERE o.book_id = b.id AND o.stock > 0
                                            ORDER BY price, id LIMIT 1)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);

    let app = spawn_app(pool, BusKind::InMemoryAsync).await;
    assert_the_catalogue_is_served(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_seeded_sqlite_catalogue_is_listed_with_each_books_cheapest_offer() {
    use crate::helpers::{spawn, TestDb};
    use marketplace::{seed::seed_database, store::Database};

    let db = TestDb::sqlite().await;
    let TestDb::Sqlite { store, .. } = &db else {
        unreachable!()
    };
    let config = small_catalogue();
    let seeded = seed_database(&Database::Sqlite(store.clone()), &config)
        .await
        .unwrap();
    assert_eq!(seeded, SMALL_CATALOGUE);
    let wrong = db
        .try_count(
            "SELECT count(*) FROM books b
             WHERE b.offer_id IS NOT (SELECT id FROM offers o WHERE o.book_id = b.id AND o.stock > 0
                                      ORDER BY price_cents, id LIMIT 1)",
        )
        .await
        .unwrap();
    assert_eq!(wrong, 0);

    let app = spawn(db, BusKind::InMemoryAsync, &[]).await;
    assert_the_catalogue_is_served(&app).await;
    app.shutdown().await;
}

/// 250 books with 3 offers each from 12 sellers.
fn small_catalogue() -> SeedConfig {
    SeedConfig {
        database: DatabaseConfig {
            database_url: String::new(),
            db_max_connections: 1,
        },
        books: 250,
        users: Some(12),
        offers_per_book: 3,
    }
}

const SMALL_CATALOGUE: Seeded = Seeded {
    users: 12,
    books: 250,
    offers: 750,
};

/// The first page lists books 1..=100 with the titles and authors the seed
/// draws for their numbers (the same on every run and either database), and
/// a search for a surname finds the books drawn with it;
/// the third page of 100 holds the last 50 books, each with its cheapest
/// offer, whose sellers are listed cheapest first with their names.
async fn assert_the_catalogue_is_served(app: &crate::helpers::TestApp) {
    let first: Value = app.get_json("/books?page=1&pageSize=100").await;
    let listed: Vec<(&str, &str)> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|book| {
            (
                book["title"].as_str().unwrap(),
                book["author"].as_str().unwrap(),
            )
        })
        .collect();
    let drawn: Vec<(String, String)> = (1..=100).map(|n| (title_of(n), author_of(n))).collect();
    let drawn: Vec<(&str, &str)> = drawn
        .iter()
        .map(|(t, a)| (t.as_str(), a.as_str()))
        .collect();
    assert_eq!(listed, drawn);
    let accented = listed
        .iter()
        .filter(|(t, a)| !t.is_ascii() || !a.is_ascii())
        .count();
    assert!(
        accented > 10,
        "{accented} of 100 books have an accent: {listed:?}"
    );

    // A surname typed without its accents, in lower case, finds exactly the
    // books the seed gave that surname.
    let (surname, typed) = [
        ("García", "garcia"),
        ("Gödel", "godel"),
        ("Brontë", "bronte"),
        ("Dvořák", "dvorak"),
        ("Lagerlöf", "lagerlof"),
        ("Müller", "muller"),
        ("Sánchez", "sanchez"),
        ("Pérez", "perez"),
        ("Gómez", "gomez"),
        ("Núñez", "nunez"),
    ]
    .into_iter()
    .find(|(surname, _)| (1..=250).any(|n| author_of(n).ends_with(&format!(" {surname}"))))
    .expect("one of these surnames among 250 books");
    let mut expected: Vec<(String, String)> = (1..=250)
        .filter(|&n| author_of(n).ends_with(&format!(" {surname}")))
        .map(|n| (title_of(n), author_of(n)))
        .collect();
    let found: Value = app
        .get_json(&format!("/books?q={typed}&pageSize=100"))
        .await;
    let mut found: Vec<(String, String)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|book| {
            (
                book["title"].as_str().unwrap().to_owned(),
                book["author"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    expected.sort();
    found.sort();
    assert_eq!(found, expected, "q={typed}");

    let page: Value = app.get_json("/books?page=3&pageSize=100").await;
    assert_eq!(page.as_array().unwrap().len(), 50);
    let book = &page[0];
    assert!(
        book["price"].as_f64().unwrap() > 0.0 && book["offerId"].is_string(),
        "{book}"
    );
    let offers = app
        .get_json(&format!("/offers/{}", book["id"].as_str().unwrap()))
        .await;
    assert_eq!(offers.as_array().unwrap().len(), 3);
    assert_eq!(offers[0]["id"], book["offerId"]);
    let sellers = offers
        .as_array()
        .unwrap()
        .iter()
        .filter(|offer| offer["sellerName"].is_string())
        .count();
    assert_eq!(sellers, 3, "every offer names a seeded seller: {offers}");
}
