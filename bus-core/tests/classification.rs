//! Which database failure is which: real errors from PostgreSQL and SQLite
//! and the driver's own, through `From<sqlx::Error> for HandlerError`.

use std::time::Duration;

use bus_core::{
    transport::{decide, Settlement},
    FailureKind, HandlerError, RetryPolicy,
};
use sqlx::{postgres::PgPoolOptions, sqlite::SqlitePoolOptions, PgPool};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn postgres() -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url())
        .await
        .expect("PostgreSQL at DATABASE_URL")
}

/// A genuine `DatabaseError` carrying `sqlstate`, raised by PostgreSQL.
async fn raised(pool: &PgPool, sqlstate: &str) -> sqlx::Error {
    let statement = format!(
        "DO $$ BEGIN RAISE EXCEPTION 'raised for the test' USING ERRCODE = '{sqlstate}'; END $$"
    );
    let error = sqlx::query(&statement)
        .execute(pool)
        .await
        .expect_err("the DO block raises");
    let code = error
        .as_database_error()
        .and_then(|database| database.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some(sqlstate), "{error}");
    error
}

fn kind(error: sqlx::Error) -> FailureKind {
    HandlerError::from(error).kind()
}

#[tokio::test]
async fn postgres_connection_resource_and_operator_classes_and_serialization_conflicts_are_infrastructure(
) {
    let pool = postgres().await;
    for sqlstate in [
        "08000", "08003", "08006", "08001", "53000", "53100", "53200", "53300", "57000", "57014",
        "57P01", "57P02", "57P03", "40001", "40P01",
    ] {
        assert_eq!(
            kind(raised(&pool, sqlstate).await),
            FailureKind::Infrastructure,
            "SQLSTATE {sqlstate}"
        );
    }
}

#[tokio::test]
async fn postgres_data_exceptions_and_constraint_violations_are_permanent() {
    let pool = postgres().await;
    for sqlstate in [
        "22000", "22001", "22003", "22021", "22P02", "23000", "23502", "23503", "23505", "23514",
    ] {
        assert_eq!(
            kind(raised(&pool, sqlstate).await),
            FailureKind::Permanent,
            "SQLSTATE {sqlstate}"
        );
    }
    // Not raised by hand: PostgreSQL refusing a NUL in text, as it does for
    // a name that carries one.
    let nul = sqlx::query("SELECT convert_from('\\x6100'::bytea, 'UTF8')")
        .execute(&pool)
        .await
        .expect_err("NUL is not valid text");
    assert_eq!(kind(nul), FailureKind::Permanent);
}

#[tokio::test]
async fn other_postgres_errors_are_retried_as_business_failures() {
    let pool = postgres().await;
    for sqlstate in ["P0001", "42501", "40002", "XX000"] {
        assert_eq!(
            kind(raised(&pool, sqlstate).await),
            FailureKind::Retryable,
            "SQLSTATE {sqlstate}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_and_a_pool_timeout_are_infrastructure() {
    // Nothing listens on port 1.
    let refused =
        <sqlx::PgConnection as sqlx::Connection>::connect("postgres://postgres@127.0.0.1:1/test")
            .await
            .expect_err("nothing listens there");
    assert_eq!(kind(refused), FailureKind::Infrastructure);

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect(&database_url())
        .await
        .expect("PostgreSQL at DATABASE_URL");
    let held = pool.acquire().await.expect("the only connection");
    let timed_out = pool.acquire().await.expect_err("the pool is exhausted");
    assert!(
        matches!(timed_out, sqlx::Error::PoolTimedOut),
        "{timed_out}"
    );
    assert_eq!(kind(timed_out), FailureKind::Infrastructure);
    drop(held);

    pool.close().await;
    let closed = pool.acquire().await.expect_err("the pool is closed");
    assert_eq!(kind(closed), FailureKind::Infrastructure);
}

#[test]
fn driver_errors_are_classified_by_variant() {
    use std::io::{Error as IoError, ErrorKind};
    let infrastructure = [
        sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed,
        sqlx::Error::WorkerCrashed,
        sqlx::Error::Io(IoError::from(ErrorKind::ConnectionRefused)),
        sqlx::Error::Io(IoError::from(ErrorKind::ConnectionReset)),
        sqlx::Error::Io(IoError::from(ErrorKind::UnexpectedEof)),
        sqlx::Error::Tls("handshake failed".into()),
        sqlx::Error::Protocol("unexpected message".to_owned()),
    ];
    for error in infrastructure {
        let text = error.to_string();
        assert_eq!(kind(error), FailureKind::Infrastructure, "{text}");
    }
    let permanent = [
        sqlx::Error::ColumnNotFound("price".to_owned()),
        sqlx::Error::Decode("not a number".into()),
        sqlx::Error::TypeNotFound {
            type_name: "money2".to_owned(),
        },
    ];
    for error in permanent {
        let text = error.to_string();
        assert_eq!(kind(error), FailureKind::Permanent, "{text}");
    }
    assert_eq!(kind(sqlx::Error::RowNotFound), FailureKind::Retryable);
}

#[tokio::test]
async fn sqlite_constraint_violations_are_permanent_and_a_busy_database_is_infrastructure() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    sqlx::query(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL CHECK (length(name) > 0))",
    )
    .execute(&pool)
    .await
    .expect("table");
    sqlx::query("INSERT INTO t VALUES (1, 'a')")
        .execute(&pool)
        .await
        .expect("first row");
    for statement in [
        "INSERT INTO t VALUES (1, 'b')",
        "INSERT INTO t VALUES (2, NULL)",
        "INSERT INTO t VALUES (3, '')",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err("a constraint refuses it");
        assert_eq!(kind(error), FailureKind::Permanent, "{statement}");
    }

    let file = std::env::temp_dir().join(format!("classification-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let options = || {
        url.parse::<sqlx::sqlite::SqliteConnectOptions>()
            .expect("URL")
            .busy_timeout(Duration::ZERO)
    };
    let holder = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options())
        .await
        .expect("file database");
    sqlx::query("CREATE TABLE t (id INTEGER)")
        .execute(&holder)
        .await
        .expect("table");
    let mut writing = holder.begin().await.expect("transaction");
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *writing)
        .await
        .expect("write lock taken");
    let other = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options())
        .await
        .expect("second connection");
    let busy = sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&other)
        .await
        .expect_err("the database is locked by the other writer");
    assert_eq!(kind(busy), FailureKind::Infrastructure);
    writing.rollback().await.expect("rollback");
    let _ = std::fs::remove_file(file);
}

#[test]
fn an_infrastructure_failure_never_uses_up_the_last_attempt() {
    let policy = RetryPolicy::default();
    let down = Err(HandlerError::from(sqlx::Error::PoolTimedOut));
    assert!(matches!(
        decide(&down, policy.max_attempts, &policy),
        Settlement::Suspend { .. }
    ));
    let refused = Err(HandlerError::from(sqlx::Error::Decode("bad".into())));
    assert!(matches!(
        decide(&refused, 1, &policy),
        Settlement::DeadLetter { .. }
    ));
}
