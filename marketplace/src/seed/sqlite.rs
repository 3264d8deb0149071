//! The demo catalogue on SQLite: recursive CTEs generate the rows, one
//! transaction per batch on the single writer connection.

use anyhow::Context;
use sqlx::SqlitePool;

use super::{sqlite_words, Dialect, Plan, SeedConfig, Seeded};

/// Creates the catalogue described by `config` through the writer `pool`.
pub(super) async fn seed(pool: &SqlitePool, config: &SeedConfig) -> anyhow::Result<Seeded> {
    let plan = Plan::new(config);

    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS seed_sellers (n INTEGER PRIMARY KEY, id BLOB NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM seed_sellers")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ?1)
         INSERT INTO seed_sellers (n, id) SELECT n, randomblob(16) FROM k",
    )
    .bind(plan.users)
    .execute(&mut *tx)
    .await
    .context("cannot create users")?;
    sqlx::query(
        "INSERT INTO users (id, name) SELECT id, 'Seller ' || ?1 || '-' || (n + 1) FROM seed_sellers",
    )
    .bind(&plan.run)
    .execute(&mut *tx)
    .await
    .context("cannot create users")?;
    // The vocabulary, for the titles and authors drawn below.
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS seed_words
             (list INTEGER NOT NULL, k INTEGER NOT NULL, word TEXT NOT NULL,
              PRIMARY KEY (list, k)) WITHOUT ROWID",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM seed_words")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO seed_words (list, k, word) VALUES {}",
        sqlite_words()
    ))
    .execute(&mut *tx)
    .await
    .context("cannot load the vocabulary")?;
    tx.commit().await?;

    let books = format!(
        "WITH RECURSIVE k(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM k WHERE n < ?2)
         INSERT INTO books (id, title, author)
         SELECT randomblob(16), {title}, {author} FROM k",
        title = Dialect::Sqlite.title("n"),
        author = Dialect::Sqlite.author("n"),
    );
    for (first, last) in plan.batches() {
        let mut tx = pool.begin().await?;
        let (position,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(position), 0) + 1 FROM books")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(&books)
            .bind(first)
            .bind(last)
            .execute(&mut *tx)
            .await
            .context("cannot create books")?;
        if plan.offers_per_book > 0 {
            sqlx::query(
                "WITH RECURSIVE j(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM j WHERE n < ?3)
                 INSERT INTO offers (id, book_id, seller_id, price_cents, stock)
                 SELECT randomblob(16), b.id,
                        (SELECT id FROM seed_sellers WHERE n = abs(random()) % ?2),
                        100 + abs(random()) % 9901,
                        1 + abs(random()) % 20
                 FROM books b, j WHERE b.position >= ?1",
            )
            .bind(position)
            .bind(plan.users)
            .bind(plan.offers_per_book)
            .execute(&mut *tx)
            .await
            .context("cannot create offers")?;
            sqlx::query(
                "UPDATE books SET (offer_id, price_cents, stock) =
                    (SELECT id, price_cents, stock FROM offers o
                     WHERE o.book_id = books.id AND o.stock > 0
                     ORDER BY price_cents, id LIMIT 1)
                 WHERE position >= ?1
                   AND EXISTS (SELECT 1 FROM offers o WHERE o.book_id = books.id AND o.stock > 0)",
            )
            .bind(position)
            .execute(&mut *tx)
            .await
            .context("cannot set cheapest offers")?;
        }
        tx.commit().await?;
        plan.written((first, last));
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(plan.done())
}
