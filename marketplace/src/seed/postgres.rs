//! The demo catalogue on PostgreSQL: one statement per batch writes the
//! books, their offers and each book's cheapest offer.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;

use sqlx::{postgres::PgPoolOptions, ConnectOptions, PgPool};

use super::{Dialect, Plan, SeedConfig, Seeded};

/// Batches written at once.
const PARALLEL_BATCHES: usize = 2;

/// A UUIDv7-like id whose first 48 bits are `millis`: ids generated in
/// order land at the right edge of the primary-key index instead of on a
/// random page, which is what makes a million inserts fast.
fn ordered_uuid(millis: &str) -> String {
    format!(
        "encode(overlay(uuid_send(gen_random_uuid())
                placing substring(int8send({millis}) from 3) || '\\x70'::bytea from 1 for 7), 'hex')::uuid"
    )
}

/// Creates the catalogue described by `config` in `pool`.
pub async fn seed(pool: &PgPool, config: &SeedConfig) -> anyhow::Result<Seeded> {
    let plan = Plan::new(config);
    // Each batch takes seconds by design: connections of its own that
    // don't report it as a slow statement.
    let options = (*pool.connect_options())
        .clone()
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    let pool = &PgPoolOptions::new()
        .max_connections(PARALLEL_BATCHES as u32)
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL")?;

    let sellers: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, name)
         SELECT gen_random_uuid(), 'Seller ' || $2 || '-' || n
         FROM generate_series(1, $1) AS n
         RETURNING id",
    )
    .bind(plan.users)
    .bind(&plan.run)
    .fetch_all(pool)
    .await
    .context("cannot create users")?;

    // Offers are generated once, inserted, and the cheapest of each book
    // picked from the same rows, so no pass updates the books afterwards.
    // created_at increases with n so the catalogue pages in a stable order.
    let batch = format!(
        "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS millis),
         b AS MATERIALIZED (
             SELECT n, {book_id} AS id, {title} AS title, {author} AS author,
                    now() + make_interval(secs => n / 1000000.0) AS created_at
             FROM clock, generate_series($1::bigint, $2::bigint) AS n),
         o AS MATERIALIZED (
             SELECT {offer_id} AS id, b.id AS book_id,
                    ($3::uuid[])[1 + floor(random() * array_length($3::uuid[], 1))::int] AS seller_id,
                    round((1 + random() * 99)::numeric, 2) AS price,
                    1 + floor(random() * 20)::int AS stock
             FROM clock, b, generate_series(1, $4::bigint) AS j),
         new_offers AS (
             INSERT INTO offers (id, book_id, seller_id, price, stock)
             SELECT id, book_id, seller_id, price, stock FROM o),
         cheapest AS (
             SELECT DISTINCT ON (book_id) book_id, id, price, stock
             FROM o ORDER BY book_id, price, id)
         INSERT INTO books (id, title, author, offer_id, price, stock, created_at)
         SELECT b.id, b.title, b.author, c.id, coalesce(c.price, 0), coalesce(c.stock, 0), b.created_at
         FROM b LEFT JOIN cheapest c ON c.book_id = b.id",
        book_id = ordered_uuid("clock.millis + n"),
        offer_id = ordered_uuid("clock.millis + (b.n * 20) + j"),
        title = Dialect::Postgres.title("n"),
        author = Dialect::Postgres.author("n"),
    );
    // Two batches at a time: each runs on its own backend, so both cores
    // work while the other batch waits on I/O.
    let batch = &batch;
    let sellers = &sellers;
    let progress = &plan;
    futures::stream::iter(plan.batches())
        .map(|(first, last)| async move {
            let mut tx = pool.begin().await?;
            // A crash mid-seed loses nothing a re-run would not recreate;
            // don't wait for each batch's WAL flush.
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
            sqlx::query(batch)
                .bind(first)
                .bind(last)
                .bind(sellers)
                .bind(progress.offers_per_book)
                .execute(&mut *tx)
                .await
                .context("cannot create books and offers")?;
            tx.commit().await?;
            progress.written((first, last));
            anyhow::Ok(())
        })
        .buffer_unordered(PARALLEL_BATCHES)
        .try_collect::<()>()
        .await?;
    sqlx::query("ANALYZE users, books, offers")
        .execute(pool)
        .await?;
    pool.close().await;
    Ok(plan.done())
}
