//! The deployment's database roles: `marketplace migrate` runs as the
//! schema's owner, and the API runs with `--skip-migrations` as a role that
//! may only read and write rows (docker/postgresql/10-roles.sh makes the
//! same two roles with the same grants).

use std::time::Duration;

use marketplace::{
    config::ServeConfig,
    startup::{self, App},
    store::postgres::schema::{self, SchemaError},
};
use serde_json::json;
use sqlx::{postgres::PgConnectOptions, PgPool};
use uuid::Uuid;

use crate::helpers::{init_logging, Running};

/// A migration role owning the test database and its schema, and an
/// application role with rows only, as the deployment's init script makes
/// them (without passwords: the test server trusts local connections).
struct Roles {
    admin: PgPool,
    database: String,
    host: String,
    port: u16,
    migrator: String,
    app: String,
}

impl Roles {
    async fn create(admin: PgPool) -> Self {
        let options: PgConnectOptions = admin.connect_options().as_ref().clone();
        let suffix = Uuid::new_v4().simple().to_string();
        let roles = Self {
            database: sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&admin)
                .await
                .expect("database name"),
            host: options.get_host().to_owned(),
            port: options.get_port(),
            migrator: format!("test_migrator_{suffix}"),
            app: format!("test_app_{suffix}"),
            admin,
        };
        let (db, migrator, app) = (&roles.database, &roles.migrator, &roles.app);
        for statement in [
            format!("CREATE ROLE {migrator} LOGIN"),
            format!("CREATE ROLE {app} LOGIN"),
            format!("ALTER DATABASE \"{db}\" OWNER TO {migrator}"),
            format!("REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC"),
            format!("GRANT CONNECT ON DATABASE \"{db}\" TO {app}"),
            format!("ALTER SCHEMA public OWNER TO {migrator}"),
            "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
            format!("GRANT USAGE ON SCHEMA public TO {app}"),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public \
                 GRANT USAGE ON SEQUENCES TO {app}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public \
                 GRANT EXECUTE ON FUNCTIONS TO {app}"
            ),
        ] {
            sqlx::query(&statement)
                .execute(&roles.admin)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
        roles
    }

    fn url(&self, role: &str) -> String {
        format!(
            "postgres://{role}@{}:{}/{}",
            self.host, self.port, self.database
        )
    }

    /// `marketplace migrate` as the migration role.
    async fn migrate(&self) {
        let database = startup::connect(&marketplace::config::DatabaseConfig {
            database_url: self.url(&self.migrator),
            db_max_connections: 2,
        })
        .await
        .expect("the migration role applies the migrations");
        database.close().await;
    }

    /// Whether `sql`, run as the application role, is refused for lack of
    /// privilege (SQLSTATE 42501) or ownership.
    async fn refused_to_app(&self, sql: &str) -> bool {
        let pool = PgPool::connect(&self.url(&self.app))
            .await
            .expect("app role connects");
        let outcome = sqlx::query(sql).execute(&pool).await;
        pool.close().await;
        match outcome {
            Ok(_) => false,
            Err(sqlx::Error::Database(error)) => error.code().as_deref() == Some("42501"),
            Err(error) => panic!("{sql}: {error}"),
        }
    }

    /// Gives everything back to the administrator and drops both roles.
    async fn drop(self) {
        let (db, migrator, app) = (&self.database, &self.migrator, &self.app);
        for statement in [
            format!("ALTER DATABASE \"{db}\" OWNER TO CURRENT_USER"),
            format!("REASSIGN OWNED BY {migrator} TO CURRENT_USER"),
            format!("DROP OWNED BY {app}"),
            format!("DROP OWNED BY {migrator}"),
            format!("DROP ROLE {migrator}"),
            format!("DROP ROLE {app}"),
        ] {
            sqlx::query(&statement)
                .execute(&self.admin)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
    }
}

/// `marketplace serve --skip-migrations` as `role`, on the in-memory bus.
fn serve_config(roles: &Roles, role: &str, schema_wait: &str) -> ServeConfig {
    ServeConfig::from_args([
        "--bus",
        "in-memory",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &roles.url(role),
        "--db-max-connections",
        "4",
        "--skip-migrations",
        "--schema-wait",
        schema_wait,
    ])
    .expect("valid flags")
}

#[sqlx::test(migrations = false)]
async fn an_api_without_ddl_rights_serves_a_database_its_migration_role_migrated(admin: PgPool) {
    init_logging();
    let roles = Roles::create(admin).await;
    roles.migrate().await;

    let app = App::build(&serve_config(&roles, &roles.app, "5s"))
        .await
        .expect("the API starts as a role that cannot change the schema");
    let api = Running::start(app);
    // The whole flow: every table written, the outbox relayed, the
    // cheapest-offer function run, all as the application role.
    let (user, book, offer, order) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    use reqwest::Method;
    assert_eq!(
        api.send(Method::PUT, "/user", json!({"id": user, "name": "Ann"}))
            .await,
        200
    );
    assert_eq!(
        api.send(
            Method::PUT,
            "/book",
            json!({"id": book, "title": "Dune", "author": "Frank Herbert"})
        )
        .await,
        200
    );
    assert_eq!(
        api.send(
            Method::POST,
            "/offer",
            json!({"id": offer, "bookId": book, "sellerId": user, "price": 12.5, "stock": 3})
        )
        .await,
        200
    );
    assert_eq!(
        api.send(
            Method::POST,
            "/order",
            json!({"id": order, "userId": user, "items": [{"offerId": offer, "quantity": 1}]})
        )
        .await,
        200
    );
    let (status, placed) = api.get(&format!("/orders/{order}")).await;
    assert_eq!(
        (status, placed["status"].as_str()),
        (200, Some("confirmed"))
    );
    // The book's cheapest offer is refreshed by an event, after the answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, listed) = api.get(&format!("/books/{book}")).await;
        if status == 200 && listed["offerId"] == json!(offer) && listed["stock"] == json!(2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the book never showed its offer with 2 copies left: {status} {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.stop().await;

    // What the application role may not do.
    assert!(roles.refused_to_app("CREATE TABLE intruder (id int)").await);
    assert!(roles.refused_to_app("DROP TABLE books").await);
    assert!(
        roles
            .refused_to_app("ALTER TABLE books ADD COLUMN extra int")
            .await
    );
    assert!(roles.refused_to_app("TRUNCATE books").await);
    roles.drop().await;
}

#[sqlx::test(migrations = false)]
async fn an_api_started_before_the_migrations_waits_for_them(admin: PgPool) {
    init_logging();
    let roles = Roles::create(admin).await;
    let config = serve_config(&roles, &roles.app, "60s");
    let starting = tokio::spawn(async move { App::build(&config).await });
    // The API keeps waiting while nothing is migrated...
    let pool = PgPool::connect(&roles.url(&roles.app))
        .await
        .expect("app role connects");
    let behind = schema::check(&pool).await;
    assert!(
        matches!(behind, Err(SchemaError::Behind { .. })),
        "{behind:?}"
    );
    assert!(!starting.is_finished());
    // ...and starts once the migration role has applied them.
    roles.migrate().await;
    let app = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("the API starts once migrated")
        .expect("build task")
        .expect("the API builds");
    let api = Running::start(app);
    let (status, _) = api.get("/health/ready").await;
    assert_eq!(status, 200);
    api.stop().await;
    assert!(schema::check(&pool).await.is_ok());
    pool.close().await;
    roles.drop().await;
}

#[sqlx::test(migrations = false)]
async fn an_api_on_an_unmigrated_database_gives_up_and_says_what_to_run(admin: PgPool) {
    init_logging();
    let roles = Roles::create(admin).await;
    let error = match App::build(&serve_config(&roles, &roles.app, "300ms")).await {
        Ok(_) => panic!("an API on an unmigrated database must not start"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("marketplace migrate"), "{error}");
    assert!(error.contains("migration"), "{error}");
    roles.drop().await;
}
