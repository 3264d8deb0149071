//! `marketplace seed`: fills the database with a demo catalogue (users,
//! books, offers) for demos and performance tests.
//!
//! Rows are generated inside PostgreSQL (`generate_series`), in batches, so
//! a million books never cross the wire one by one. The cheapest-offer
//! columns are computed at the end, as the `refresh-cheapest-offer`
//! subscriber would. Seeding adds to what is there; it never deletes.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// Books generated per statement: large enough to be fast, small enough to
/// keep each transaction's memory and WAL modest.
const BATCH: i64 = 100_000;

/// `marketplace seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedConfig {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Books to create.
    #[arg(long, default_value_t = 10_000)]
    pub books: i64,
    /// Users to create (sellers); default: one per 10 books, at least 10.
    #[arg(long)]
    pub users: Option<i64>,
    /// Offers per book (0 leaves books without offers).
    #[arg(long, default_value_t = 2)]
    pub offers_per_book: i64,
}

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

/// Creates the catalogue described by `config` in `pool`.
pub async fn seed(pool: &PgPool, config: &SeedConfig) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let books = config.books.max(0);
    let users = config.users.unwrap_or(books / 10).max(10);
    let offers_per_book = config.offers_per_book.clamp(0, 20);

    // Sellers get a run id in their name so several seeds can coexist.
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    sqlx::query(
        "INSERT INTO users (id, name)
         SELECT gen_random_uuid(), 'Seller ' || $2 || '-' || n
         FROM generate_series(1, $1) AS n",
    )
    .bind(users)
    .bind(&run)
    .execute(pool)
    .await
    .context("cannot create users")?;
    let sellers: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM users WHERE name LIKE 'Seller ' || $1 || '-%' ORDER BY id",
    )
    .bind(&run)
    .fetch_all(pool)
    .await?;

    let mut created = 0;
    while created < books {
        let count = BATCH.min(books - created);
        let mut tx = pool.begin().await?;
        // Titles and authors from small word lists: realistic lengths and
        // repetition, cheap to generate. created_at increases with n so the
        // catalogue pages in a stable order.
        let book_ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO books (id, title, author, created_at)
             SELECT gen_random_uuid(),
                    (ARRAY['The','A','Last','Silent','Hidden','Broken','Golden','Lost','Secret','Northern'])[1 + n % 10]
                      || ' ' ||
                    (ARRAY['River','Garden','Empire','Letter','Winter','Kingdom','Voyage','Orchard','Harbour','Mirror'])[1 + (n / 10) % 10]
                      || ' ' || n,
                    (ARRAY['Ann','Boris','Chloe','Diego','Emma','Farid','Grace','Hugo','Ines','Jonas'])[1 + n % 10]
                      || ' ' ||
                    (ARRAY['Martin','Okafor','Rossi','Tanaka','Novak','Silva','Dubois','Larsen','Kowalski','Haddad'])[1 + (n / 7) % 10],
                    now() + make_interval(secs => n / 1000000.0)
             FROM generate_series($1::bigint, $2::bigint) AS n
             RETURNING id",
        )
        .bind(created + 1)
        .bind(created + count)
        .fetch_all(&mut *tx)
        .await
        .context("cannot create books")?;
        if offers_per_book > 0 {
            sqlx::query(
                "INSERT INTO offers (id, book_id, seller_id, price, stock)
                 SELECT gen_random_uuid(), b.id,
                        ($2::uuid[])[1 + floor(random() * array_length($2::uuid[], 1))::int],
                        round((1 + random() * 99)::numeric, 2),
                        1 + floor(random() * 20)::int
                 FROM unnest($1::uuid[]) AS b(id), generate_series(1, $3::bigint)",
            )
            .bind(&book_ids)
            .bind(&sellers)
            .bind(offers_per_book)
            .execute(&mut *tx)
            .await
            .context("cannot create offers")?;
            sqlx::query(
                "UPDATE books SET offer_id = c.id, price = c.price, stock = c.stock
                 FROM (SELECT DISTINCT ON (book_id) book_id, id, price, stock
                       FROM offers WHERE book_id = ANY($1) AND stock > 0
                       ORDER BY book_id, price, id) AS c
                 WHERE books.id = c.book_id",
            )
            .bind(&book_ids)
            .execute(&mut *tx)
            .await
            .context("cannot set cheapest offers")?;
        }
        tx.commit().await?;
        created += count;
        tracing::info!(books = created, of = books, "seeding");
    }
    sqlx::query("ANALYZE users, books, offers")
        .execute(pool)
        .await?;
    let seeded = Seeded {
        users,
        books,
        offers: books * offers_per_book,
    };
    tracing::info!(
        ?seeded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "seeded"
    );
    Ok(seeded)
}

/// Creates the catalogue described by `config` in whichever database
/// `database` is.
pub async fn seed_database(
    database: &crate::store::Database,
    config: &SeedConfig,
) -> anyhow::Result<Seeded> {
    match database {
        crate::store::Database::Postgres(pool) => seed(pool, config).await,
        crate::store::Database::Sqlite(store) => seed_sqlite(store.writer(), config).await,
    }
}

/// [`seed`] on SQLite: the same catalogue, generated with recursive CTEs
/// in one transaction per batch.
async fn seed_sqlite(pool: &sqlx::SqlitePool, config: &SeedConfig) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let books = config.books.max(0);
    let users = config.users.unwrap_or(books / 10).max(10);
    let offers_per_book = config.offers_per_book.clamp(0, 20);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

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
    .bind(users)
    .execute(&mut *tx)
    .await
    .context("cannot create users")?;
    sqlx::query("INSERT INTO users (id, name) SELECT id, 'Seller ' || ?1 || '-' || (n + 1) FROM seed_sellers")
        .bind(&run)
        .execute(&mut *tx)
        .await
        .context("cannot create users")?;
    tx.commit().await?;

    let mut created = 0;
    while created < books {
        let count = BATCH.min(books - created);
        let mut tx = pool.begin().await?;
        let (first,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(position), 0) + 1 FROM books")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "WITH RECURSIVE k(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM k WHERE n < ?2)
             INSERT INTO books (id, title, author)
             SELECT randomblob(16),
                    json_extract('[\"The\",\"A\",\"Last\",\"Silent\",\"Hidden\",\"Broken\",\"Golden\",\"Lost\",\"Secret\",\"Northern\"]', '$[' || (n % 10) || ']')
                      || ' ' ||
                    json_extract('[\"River\",\"Garden\",\"Empire\",\"Letter\",\"Winter\",\"Kingdom\",\"Voyage\",\"Orchard\",\"Harbour\",\"Mirror\"]', '$[' || ((n / 10) % 10) || ']')
                      || ' ' || n,
                    json_extract('[\"Ann\",\"Boris\",\"Chloe\",\"Diego\",\"Emma\",\"Farid\",\"Grace\",\"Hugo\",\"Ines\",\"Jonas\"]', '$[' || (n % 10) || ']')
                      || ' ' ||
                    json_extract('[\"Martin\",\"Okafor\",\"Rossi\",\"Tanaka\",\"Novak\",\"Silva\",\"Dubois\",\"Larsen\",\"Kowalski\",\"Haddad\"]', '$[' || ((n / 7) % 10) || ']')
             FROM k",
        )
        .bind(created + 1)
        .bind(created + count)
        .execute(&mut *tx)
        .await
        .context("cannot create books")?;
        if offers_per_book > 0 {
            sqlx::query(
                "WITH RECURSIVE j(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM j WHERE n < ?3)
                 INSERT INTO offers (id, book_id, seller_id, price_cents, stock)
                 SELECT randomblob(16), b.id,
                        (SELECT id FROM seed_sellers WHERE n = abs(random()) % ?2),
                        100 + abs(random()) % 9901,
                        1 + abs(random()) % 20
                 FROM books b, j WHERE b.position >= ?1",
            )
            .bind(first)
            .bind(users)
            .bind(offers_per_book)
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
            .bind(first)
            .execute(&mut *tx)
            .await
            .context("cannot set cheapest offers")?;
        }
        tx.commit().await?;
        created += count;
        tracing::info!(books = created, of = books, "seeding");
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    let seeded = Seeded {
        users,
        books,
        offers: books * offers_per_book,
    };
    tracing::info!(
        ?seeded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "seeded"
    );
    Ok(seeded)
}
