//! `marketplace seed`: fills the database with a demo catalogue (users,
//! books, offers) for demos and performance tests.
//!
//! Rows are generated inside the database, in batches, so a million books
//! never cross the wire one by one; each book is written with its cheapest
//! offer already set, as the `refresh-cheapest-offer` subscriber would.
//! Seeding adds to what is there; it never deletes.

mod postgres;
mod sqlite;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

pub use postgres::seed;

use crate::config::SeedConfig;
use crate::store::Database;

/// Books generated per statement: large enough to be fast, small enough to
/// keep each transaction's memory and WAL modest.
const BATCH: i64 = 100_000;

/// The most offers a seeded book gets.
const MAX_OFFERS_PER_BOOK: i64 = 20;

/// What a seed run created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Users created.
    pub users: i64,
    /// Books created.
    pub books: i64,
    /// Offers created.
    pub offers: i64,
}

/// Creates the catalogue described by `config` in whichever database
/// `database` is.
pub async fn seed_database(database: &Database, config: &SeedConfig) -> anyhow::Result<Seeded> {
    match database {
        Database::Postgres(pool) => seed(pool, config).await,
        Database::Sqlite(store) => sqlite::seed(store.writer(), config).await,
    }
}

/// The sizes a [`SeedConfig`] asks for, bounded, and the run's tag.
struct Plan {
    started: Instant,
    books: i64,
    users: i64,
    offers_per_book: i64,
    /// Sellers get the run's tag in their name so several seeds coexist.
    run: String,
    /// Books written so far, by batches that may finish out of order.
    created: AtomicI64,
}

impl Plan {
    fn new(config: &SeedConfig) -> Self {
        let books = config.books.max(0);
        Self {
            started: Instant::now(),
            books,
            users: config.users.unwrap_or(books / 10).max(10),
            offers_per_book: config.offers_per_book.clamp(0, MAX_OFFERS_PER_BOOK),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            created: AtomicI64::new(0),
        }
    }

    /// The batches, as inclusive ranges of book numbers starting at 1.
    fn batches(&self) -> impl Iterator<Item = (i64, i64)> {
        let books = self.books;
        (1..=books)
            .step_by(BATCH as usize)
            .map(move |first| (first, (first + BATCH - 1).min(books)))
    }

    /// Records that the batch `first..=last` is written.
    fn written(&self, (first, last): (i64, i64)) {
        let count = last - first + 1;
        let created = self.created.fetch_add(count, Ordering::Relaxed) + count;
        tracing::info!(books = created, of = self.books, "seeding");
    }

    fn done(self) -> Seeded {
        let seeded = Seeded {
            users: self.users,
            books: self.books,
            offers: self.books * self.offers_per_book,
        };
        tracing::info!(
            ?seeded,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "seeded"
        );
        seeded
    }
}

/// Title and author word lists, indexed by a book's number so titles have
/// realistic lengths and repetition and cost nothing to generate.
const TITLE_FIRST: [&str; 10] = [
    "The", "A", "Last", "Silent", "Hidden", "Broken", "Golden", "Lost", "Secret", "Northern",
];
const TITLE_SECOND: [&str; 10] = [
    "River", "Garden", "Empire", "Letter", "Winter", "Kingdom", "Voyage", "Orchard", "Harbour",
    "Mirror",
];
const FIRST_NAMES: [&str; 10] = [
    "Ann", "Boris", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas",
];
const LAST_NAMES: [&str; 10] = [
    "Martin", "Okafor", "Rossi", "Tanaka", "Novak", "Silva", "Dubois", "Larsen", "Kowalski",
    "Haddad",
];

/// Title of book `n`: `word(n % 10) word(n / 10 % 10) n`.
fn title(n: &str) -> String {
    format!(
        "{} || ' ' || {} || ' ' || {n}",
        pick(&TITLE_FIRST, &format!("{n} % 10")),
        pick(&TITLE_SECOND, &format!("({n} / 10) % 10")),
    )
}

/// Author of book `n`.
fn author(n: &str) -> String {
    format!(
        "{} || ' ' || {}",
        pick(&FIRST_NAMES, &format!("{n} % 10")),
        pick(&LAST_NAMES, &format!("({n} / 7) % 10")),
    )
}

/// A SQL `CASE` choosing `words[index]`; the same text on both databases.
fn pick(words: &[&str], index: &str) -> String {
    let arms: String = words
        .iter()
        .enumerate()
        .map(|(i, word)| format!(" WHEN {i} THEN '{word}'"))
        .collect();
    format!("(CASE {index}{arms} END)")
}
