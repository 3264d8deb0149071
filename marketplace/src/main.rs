use clap::Parser;
use marketplace::{
    auth,
    config::{Cli, Command, ServeConfig},
    startup::{self, App, Worker},
    telemetry,
};

/// mimalloc instead of glibc's malloc: the request path allocates and frees
/// small objects across threads, where glibc's arenas spent a sixth of the
/// API's CPU (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Flushes the span exporter (if any) when dropped, an early return
    // included.
    let telemetry = match cli.command {
        Some(Command::DeadLetters(_)) => telemetry::init_on_stderr(cli.log_format),
        _ => telemetry::init(cli.log_format),
    };
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(ServeConfig::from_args(std::iter::empty::<String>())?),
    };
    match command {
        Command::Migrate(database) => {
            let database = startup::connect(&database).await?;
            tracing::info!(database = database.kind(), "migrations applied");
        }
        Command::Serve(config) => {
            let app = App::build(&config).await?;
            app.run(marketplace::shutdown::signal()).await?;
        }
        Command::Seed(config) => {
            let database = startup::connect(&config.database).await?;
            let seeded = marketplace::seed::seed_database(&database, &config).await?;
            tracing::info!(?seeded, "catalogue seeded");
        }
        Command::DeadLetters(action) => {
            marketplace::operations::dead_letters::run(&action, &mut std::io::stdout().lock())
                .await?;
        }
        Command::Worker(config) => {
            let worker = Worker::build(&config).await?;
            worker.run(marketplace::shutdown::signal()).await?;
        }
        Command::Token(config) => {
            let secret = config.secret.secret()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no signing secret: set --auth-secret (MARKETPLACE_AUTH_SECRET) or \
                     --auth-secret-file (MARKETPLACE_AUTH_SECRET_FILE), as for `serve`"
                )
            })?;
            let token = auth::mint(&secret, config.user, &config.claims.claims(), config.ttl)?;
            println!("{token}");
        }
    }
    telemetry.shutdown();
    Ok(())
}
