//! The `outboxd` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use outboxd::config::Settings;
use outboxd::logging::{self, LogControl};
use outboxd::metrics::metrics;
use outboxd::ops::{check, migrate, snapshot, status};
use outboxd::relay::{self, RelayConfig, RelayError, Shutdown};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// Moves committed PostgreSQL changes into Apache Kafka exactly once.
#[derive(Debug, Parser)]
#[command(name = "outboxd", version, about)]
struct Cli {
    /// The configuration file (`config/outboxd.toml` documents every key).
    #[arg(
        short,
        long,
        global = true,
        env = "OUTBOXD_CONFIG",
        default_value = "/etc/outboxd/outboxd.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or SIGINT (SIGHUP re-reads log.level).
    Run {
        /// On the relay's first start (no checkpoint, and no slot yet: logical mode), publish the
        /// rows already in the outbox tables once, before what the new slot captures. Ignored
        /// once the relay has a checkpoint; poll mode reads the tables anyway.
        #[arg(long, env = "OUTBOXD_PUBLISH_EXISTING_ROWS")]
        publish_existing_rows: bool,
        /// Take over from the active instance of this relay name at once (end its lease
        /// session, fence its Kafka producer) instead of standing by until it stops.
        #[arg(long, env = "OUTBOXD_TAKE_OVER")]
        take_over: bool,
    },
    /// Check everything `run` needs, on Postgres and Kafka; each failure says how to fix it.
    Check,
    /// Apply the database migrations (outbox table, publication, grants); safe to repeat.
    Migrate {
        /// Connect with this URL instead of postgres.url (a role allowed to create tables and
        /// publications); the grants still go to postgres.url's role.
        #[arg(long, env = "OUTBOXD_MIGRATE_URL")]
        admin_url: Option<String>,
    },
    /// Show the slot's position, retained WAL, lag and the last checkpoint in Kafka.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start an incremental snapshot of tables while the relay streams, or stop, pause or resume
    /// it: sends a signal the running relay reads in its stream (docs/snapshots.md).
    Snapshot {
        /// The tables to read (`schema.table`, or a regular expression of such names); with
        /// --stop, the tables to stop reading (none: the whole snapshot).
        tables: Vec<String>,
        /// Read only the rows this filter lets through, e.g. "status = 'open' AND id > 100"
        /// (comparisons, IN, BETWEEN, LIKE, IS NULL, AND, OR, NOT; no SQL beyond these).
        #[arg(long, conflicts_with_all = ["stop", "pause", "resume"])]
        filter: Option<String>,
        /// Stop the snapshot, or reading the tables named.
        #[arg(long, conflicts_with_all = ["pause", "resume"])]
        stop: bool,
        /// Pause the snapshot (the stream goes on).
        #[arg(long, conflicts_with_all = ["resume", "tables"])]
        pause: bool,
        /// Resume a paused snapshot.
        #[arg(long, conflicts_with = "tables")]
        resume: bool,
    },
}

/// Exit status of a failure.
const EXIT_FAILED: u8 = 1;
/// Exit status of a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;
/// Exit status when another instance with the same relay name took over.
const EXIT_FENCED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.config);
    let log_section = settings.as_ref().map(|s| s.log.clone()).unwrap_or_default();
    // check's report is for a person: librdkafka's own log lines (JSON when stderr is not a
    // terminal) would interleave with it, and every failure they describe is a finding already.
    let level = match cli.command {
        Command::Check => format!("{},librdkafka=off", log_section.level),
        _ => log_section.level.clone(),
    };
    let logs = match logging::init(&level, log_section.format) {
        Ok(logs) => logs,
        Err(error) => {
            eprintln!("outboxd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Validated here for every command, so that a value `run` could not work with fails `check`,
    // `migrate` and `status` alike, with the configuration's exit status.
    let validated = settings.and_then(|settings| {
        let relay = settings.relay_config()?;
        Ok((settings, relay))
    });
    let (settings, relay_config) = match validated {
        Ok(validated) => validated,
        Err(error) => {
            tracing::error!(error = %error, "outboxd stopped: the configuration cannot be used");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Failpoints from FAILPOINTS, only in builds with the `failpoints` feature (crash tests).
    let _failpoints = fail::FailScenario::setup();
    // `run` is one pipeline: the replication stream is read, decoded and routed by one task, and
    // the blocking Kafka calls run on the sink's own thread. On a current-thread runtime the thread
    // that routes also waits on the socket, where a multi-threaded one reads readiness on a worker
    // and wakes the routing thread for it: a futex wake-up per read, three per transaction when
    // caught up (W3 p99 84-105 ms against 145-526 ms in alternating bench runs, bench/README.md).
    // Blocking work stays off this thread (the sink thread, `spawn_blocking`). The other commands
    // use the multi-threaded runtime.
    let runtime = match cli.command {
        Command::Run { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let exit = match cli.command {
        Command::Run {
            publish_existing_rows,
            take_over,
        } => {
            let relay_config = RelayConfig {
                publish_existing_rows,
                take_over,
                ..relay_config
            };
            runtime.block_on(run(&cli.config, &settings, relay_config, logs))
        }
        Command::Check => runtime.block_on(async {
            let report = check::run(&settings, &relay_config).await;
            print!("{report}");
            ExitCode::from(if report.passed() { 0 } else { EXIT_FAILED })
        }),
        Command::Migrate { admin_url } => {
            let outcome = runtime.block_on(migrate::run(&relay_config, admin_url.as_deref()));
            finish_command(outcome.map(|applied| print!("{applied}")))
        }
        Command::Snapshot {
            tables,
            filter,
            stop,
            pause,
            resume,
        } => {
            let request = if stop {
                snapshot::Request::Stop { tables }
            } else if pause {
                snapshot::Request::Pause
            } else if resume {
                snapshot::Request::Resume
            } else {
                snapshot::Request::Execute { tables, filter }
            };
            let outcome = runtime.block_on(snapshot::send(&relay_config, request));
            finish_command(outcome.map(|sent| println!("{sent}")))
        }
        Command::Status { json } => {
            let outcome = runtime.block_on(status::read(&relay_config));
            finish_command(outcome.map(|status| {
                if json {
                    println!("{}", status.to_json());
                } else {
                    print!("{status}");
                }
            }))
        }
    };
    // A relay that stopped without waiting for Kafka or Postgres may have left a blocking call
    // running (a producer start, a checkpoint read): the exit does not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    exit
}

/// The exit of a one-shot command.
fn finish_command(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "outboxd failed");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn run(
    config_path: &Path,
    settings: &Settings,
    relay_config: RelayConfig,
    logs: LogControl,
) -> ExitCode {
    let outcome = async {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), relay = %relay_config.name, "outboxd starting");
        if settings.metrics.enabled {
            metrics().set_max_ready_lag(settings.metrics.ready_max_lag);
            outboxd::http::serve(settings.metrics.listen).await?;
        }
        let shutdown = handle_signals(config_path.to_owned(), logs)?;
        outboxd::service::spawn_watchdog();
        relay::run(relay_config, shutdown).await?;
        tracing::info!("stopped cleanly");
        anyhow::Ok(())
    }
    .await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "outboxd stopped");
            let fenced = error
                .downcast_ref::<RelayError>()
                .is_some_and(RelayError::is_fenced);
            ExitCode::from(if fenced { EXIT_FENCED } else { EXIT_FAILED })
        }
    }
}

/// Handles signals on a task: SIGHUP re-reads `log.level` from the configuration file; SIGTERM
/// or SIGINT requests the returned [`Shutdown`] (a graceful stop). A task that ended (its trigger
/// dropped) also stops the relay: better than running deaf to signals.
fn handle_signals(config_path: PathBuf, logs: LogControl) -> anyhow::Result<Shutdown> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing the signal handlers")?;
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => reload_log_level(&config_path, &logs),
                _ => {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    tracing::info!("{name}: stopping");
                    outboxd::service::stopping();
                    trigger.request();
                }
            }
        }
    });
    Ok(shutdown)
}

/// SIGHUP: the file's `log.level` (or `RUST_LOG`) becomes the filter; a bad file keeps the old one.
fn reload_log_level(config_path: &Path, logs: &LogControl) {
    let reloaded = Settings::load(config_path)
        .map_err(anyhow::Error::from)
        .and_then(|settings| {
            logs.set_level(&settings.log.level)?;
            Ok(settings.log.level)
        });
    match reloaded {
        Ok(level) => tracing::info!(level = %level, "SIGHUP: log level reloaded"),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "SIGHUP: keeping the log level"
            );
        }
    }
}
