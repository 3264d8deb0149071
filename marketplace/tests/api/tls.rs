//! TLS to PostgreSQL is a matter of configuration: the URL's `sslmode` and
//! `sslrootcert` (deploy/README.md, "TLS to PostgreSQL and RabbitMQ").

use std::str::FromStr;

use marketplace::config::DatabaseConfig;
use sqlx::{
    postgres::{PgConnectOptions, PgSslMode},
    PgPool,
};

#[test]
fn a_database_url_names_the_tls_mode_and_the_certificate_authority() {
    let options = PgConnectOptions::from_str(
        "postgres://marketplace_app:secret@db.example.com:5432/marketplace\
         ?sslmode=verify-full&sslrootcert=/run/secrets/postgres_ca.pem",
    )
    .expect("a URL with TLS parameters");
    assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
    assert_eq!(options.get_host(), "db.example.com");
}

/// The test server accepts TLS (`ssl = on`): the app's connection, with
/// `sslmode=require` in its URL, is encrypted. Skipped, with a note, where
/// the server has no TLS.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn the_app_connects_over_tls_when_its_url_requires_it(test_db: PgPool) {
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&test_db)
        .await
        .expect("SHOW ssl");
    if ssl != "on" {
        eprintln!("the test server has ssl = {ssl}: TLS not exercised");
        return;
    }
    let options = test_db.connect_options();
    let url = format!(
        "postgres://{}@{}:{}/{}?sslmode=require",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("the test database's name"),
    );
    let database = marketplace::startup::connect(&DatabaseConfig {
        database_url: url,
        db_max_connections: 1,
    })
    .await
    .expect("connects with sslmode=require");
    let pool = database.postgres().expect("PostgreSQL").clone();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted, "the session is encrypted");
    database.close().await;
}
