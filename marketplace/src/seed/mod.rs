//! `marketplace seed`: fills the database with a demo catalogue (users,
//! books, offers) for demos and performance tests.
//!
//! Rows are generated inside the database, in batches, so a million books
//! never cross the wire one by one; each book is written with its cheapest
//! offer already set, as the `refresh-cheapest-offer` subscriber would.
//! Seeding adds to what is there; it never deletes.
//!
//! Titles and authors are drawn from the word lists of [`words`] by a hash
//! of the book's number, so book `n` has the same title and author
//! ([`title_of`], [`author_of`]) on every run and on either database, and
//! a search for a surname or a title word is as selective on a seeded
//! catalogue as on a real one.

mod postgres;
mod sqlite;
pub mod words;

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

/// The lists of [`words`] a title or an author is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    FirstNames,
    Surnames,
    Adjectives,
    Nouns,
    Places,
}

impl List {
    const ALL: [List; 5] = [
        List::FirstNames,
        List::Surnames,
        List::Adjectives,
        List::Nouns,
        List::Places,
    ];

    fn words(self) -> &'static [&'static str] {
        match self {
            List::FirstNames => &words::FIRST_NAMES,
            List::Surnames => &words::SURNAMES,
            List::Adjectives => &words::ADJECTIVES,
            List::Nouns => &words::NOUNS,
            List::Places => &words::PLACES,
        }
    }

    /// The list's number in SQLite's `seed_words` table.
    fn number(self) -> usize {
        self as usize
    }
}

/// The independent draws of a book: which word of which list, and which
/// title pattern.
#[derive(Debug, Clone, Copy)]
enum Draw {
    FirstName = 0,
    Surname = 1,
    Pattern = 2,
    Adjective = 3,
    Noun = 4,
    SecondNoun = 5,
    Place = 6,
}

/// Title patterns, one per value of [`Draw::Pattern`].
const PATTERNS: i64 = 8;

/// The modulus of [`draw`]: the prime 2^31 - 1.
const MODULUS: i64 = 2_147_483_647;
/// One multiplier per [`Draw`], so the draws of one book are independent.
const MULTIPLIERS: [i64; 7] = [
    1_597_334_677,
    1_664_525_713,
    1_812_433_253,
    1_103_515_245,
    1_234_567_891,
    2_036_212_187,
    1_979_697_957,
];

/// Draw `what` of book `n`, in `0..len`: a hash of `n` computed the same
/// way by [`draw_sql`] in SQL (integer arithmetic that fits in 64 bits for
/// any `n` below 2^32), so a book's words depend on its number alone.
fn draw(n: i64, what: Draw, len: usize) -> usize {
    let d = what as i64;
    let h = (n * MULTIPLIERS[d as usize] + d * 7_919 + 12_345) % MODULUS;
    let h = (h * 16_807 + h / 8_192) % MODULUS;
    (h % len as i64) as usize
}

/// [`draw`] as a SQL expression of the SQL expression `n`.
fn draw_sql(n: &str, what: Draw, len: usize) -> String {
    let d = what as i64;
    let m = MULTIPLIERS[d as usize];
    let h = format!("((({n}) * {m} + {}) % {MODULUS})", d * 7_919 + 12_345);
    format!("((({h} * 16807 + {h} / 8192) % {MODULUS}) % {len})")
}

/// The title of book number `n`, as the seed writes it on either database
/// (`The Silent Harbour`, `A Winter in Kraków`, ...).
pub fn title_of(n: i64) -> String {
    let word = |what, list: List| {
        let words = list.words();
        words[draw(n, what, words.len())]
    };
    let (adjective, noun) = (
        word(Draw::Adjective, List::Adjectives),
        word(Draw::Noun, List::Nouns),
    );
    let (second, place) = (
        word(Draw::SecondNoun, List::Nouns),
        word(Draw::Place, List::Places),
    );
    match draw(n, Draw::Pattern, PATTERNS as usize) {
        0 => format!("The {adjective} {noun}"),
        1 => format!("The {noun} of {place}"),
        2 => format!("{adjective} {noun}"),
        3 => format!("A {noun} in {place}"),
        4 => format!("The {noun} and the {second}"),
        5 => format!("{noun} of the {adjective} {second}"),
        6 => format!("The {adjective} {noun} of {place}"),
        _ => format!("{place} {noun}"),
    }
}

/// The author of book number `n` (`Zoë Gödel`).
pub fn author_of(n: i64) -> String {
    let first = words::FIRST_NAMES[draw(n, Draw::FirstName, words::FIRST_NAMES.len())];
    let surname = words::SURNAMES[draw(n, Draw::Surname, words::SURNAMES.len())];
    format!("{first} {surname}")
}

/// The databases' ways of picking a word of a list by index.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    /// An element of a constant array (folded once per statement).
    Postgres,
    /// A primary-key probe of the temporary `seed_words` table
    /// ([`sqlite_words`]).
    Sqlite,
}

impl Dialect {
    /// `list[index]` in SQL, `index` counted from 0.
    fn pick(self, list: List, index: &str) -> String {
        match self {
            Dialect::Postgres => {
                format!("('{{{}}}'::text[])[1 + {index}]", list.words().join(","))
            }
            Dialect::Sqlite => format!(
                "(SELECT word FROM seed_words WHERE list = {} AND k = {index})",
                list.number()
            ),
        }
    }

    fn word(self, n: &str, what: Draw, list: List) -> String {
        self.pick(list, &draw_sql(n, what, list.words().len()))
    }

    /// [`title_of`] as a SQL expression of the book number `n`.
    fn title(self, n: &str) -> String {
        let adjective = self.word(n, Draw::Adjective, List::Adjectives);
        let noun = self.word(n, Draw::Noun, List::Nouns);
        let second = self.word(n, Draw::SecondNoun, List::Nouns);
        let place = self.word(n, Draw::Place, List::Places);
        format!(
            "(CASE {pattern}
                WHEN 0 THEN 'The ' || {adjective} || ' ' || {noun}
                WHEN 1 THEN 'The ' || {noun} || ' of ' || {place}
                WHEN 2 THEN {adjective} || ' ' || {noun}
                WHEN 3 THEN 'A ' || {noun} || ' in ' || {place}
                WHEN 4 THEN 'The ' || {noun} || ' and the ' || {second}
                WHEN 5 THEN {noun} || ' of the ' || {adjective} || ' ' || {second}
                WHEN 6 THEN 'The ' || {adjective} || ' ' || {noun} || ' of ' || {place}
                ELSE {place} || ' ' || {noun} END)",
            pattern = draw_sql(n, Draw::Pattern, PATTERNS as usize),
        )
    }

    /// [`author_of`] as a SQL expression of the book number `n`.
    fn author(self, n: &str) -> String {
        format!(
            "{} || ' ' || {}",
            self.word(n, Draw::FirstName, List::FirstNames),
            self.word(n, Draw::Surname, List::Surnames)
        )
    }
}

/// The rows of SQLite's temporary `seed_words (list, k, word)` table, as
/// one `VALUES` list.
fn sqlite_words() -> String {
    List::ALL
        .iter()
        .flat_map(|&list| {
            list.words()
                .iter()
                .enumerate()
                .map(move |(k, word)| format!("({}, {k}, '{word}')", list.number()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Lower case without the accents of the vocabulary, as a search folds.
    fn fold(word: &str) -> String {
        const FROM: &str = "áàâäãåăāąçćčďđðéèêëěęėíìîïıłľńňñóòôöõøőřśšşșťțúùûüůűýÿźżž";
        const TO: &str = "aaaaaaaaacccdddeeeeeeeiiiiillnnnoooooooorssssttuuuuuuyyzzz";
        word.to_lowercase()
            .chars()
            .map(|c| {
                FROM.chars()
                    .position(|f| f == c)
                    .map_or(c, |i| TO.chars().nth(i).unwrap_or(c))
            })
            .collect()
    }

    #[test]
    fn every_word_is_searchable_on_its_own() {
        let mut owner = HashMap::new();
        for list in List::ALL {
            for word in list.words() {
                assert!(word.chars().all(char::is_alphabetic), "{word}");
                assert_eq!(owner.insert(fold(word), list), None, "{word} twice");
            }
        }
        assert!(words::SURNAMES.len() >= 100 && words::SURNAMES.len() <= 1_000);
    }

    #[test]
    fn a_surname_is_the_author_of_a_small_share_of_the_books() {
        let books = 100_000;
        let mut by_surname: HashMap<String, i64> = HashMap::new();
        let mut titles = HashSet::new();
        for n in 1..=books {
            let author = author_of(n);
            let surname = author.rsplit(' ').next().unwrap_or_default().to_owned();
            *by_surname.entry(surname).or_default() += 1;
            titles.insert(title_of(n));
        }
        assert_eq!(by_surname.len(), words::SURNAMES.len());
        for (surname, count) in by_surname {
            let share = count as f64 / books as f64;
            assert!((0.001..=0.01).contains(&share), "{surname}: {share}");
        }
        assert!(titles.len() > 50_000, "{} distinct titles", titles.len());
        assert_eq!(title_of(42), title_of(42));
    }

    #[test]
    fn the_sql_draws_what_the_rust_draws() {
        // The SQL text is the Rust arithmetic: check one draw by hand.
        let n = 123_456_i64;
        let h = (n * MULTIPLIERS[1] + 7_919 + 12_345) % MODULUS;
        let h = (h * 16_807 + h / 8_192) % MODULUS;
        assert_eq!(draw(n, Draw::Surname, 403), (h % 403) as usize);
        assert!(draw_sql("n", Draw::Surname, 403).contains("% 403)"));
    }
}
