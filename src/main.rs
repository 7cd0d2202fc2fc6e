//! The `outboxd` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outboxd::config::Settings;
use outboxd::relay::{self, RelayError};
use outboxd::sink::kafka::SinkError;
use tracing_subscriber::EnvFilter;

/// Moves committed PostgreSQL changes into Apache Kafka exactly once.
#[derive(Debug, Parser)]
#[command(name = "outboxd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or SIGINT.
    Run {
        /// The configuration file (`config/outboxd.toml` documents every key).
        #[arg(
            short,
            long,
            env = "OUTBOXD_CONFIG",
            default_value = "/etc/outboxd/outboxd.toml"
        )]
        config: PathBuf,
    },
}

/// Exit status when another instance with the same relay name took over.
const EXIT_FENCED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Failpoints from FAILPOINTS, only in builds with the `failpoints` feature (crash tests).
    let _failpoints = fail::FailScenario::setup();
    let result = match cli.command {
        Command::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "outboxd stopped");
            let fenced = matches!(
                error.downcast_ref::<RelayError>(),
                Some(RelayError::Sink(SinkError::Fenced { .. }))
            );
            ExitCode::from(if fenced { EXIT_FENCED } else { 1 })
        }
    }
}

/// Logs as text on a terminal, as JSON lines otherwise; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

fn run(config: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let relay_config = settings.relay_config()?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), relay = %relay_config.name, "outboxd starting");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        outboxd::service::spawn_watchdog();
        relay::run(relay_config, shutdown).await?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        outboxd::service::stopping();
    })
}
