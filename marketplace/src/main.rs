use clap::Parser;
use marketplace::{
    config::{Cli, Command, ServeConfig},
    startup::{self, App, Worker},
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(ServeConfig::from_args(std::iter::empty::<String>())?),
    };
    match command {
        Command::Migrate(database) => {
            startup::connect_and_migrate(&database).await?;
            tracing::info!("migrations applied");
        }
        Command::Serve(config) => {
            let app = App::build(&config).await?;
            app.run(marketplace::shutdown::signal()).await?;
        }
        Command::Seed(config) => {
            let pool = startup::connect_and_migrate(&config.database).await?;
            let seeded = marketplace::seed::seed(&pool, &config).await?;
            tracing::info!(?seeded, "catalogue seeded");
        }
        Command::Worker(config) => {
            let worker = Worker::build(&config).await?;
            worker.run(marketplace::shutdown::signal()).await?;
        }
    }
    Ok(())
}
