//! Logs with `tracing`: text on a terminal, JSON lines otherwise (or as `[log] format` says), and a
//! filter that SIGHUP can change without a restart.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// `log.format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    Auto,
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// Changes the filter of the installed subscriber.
#[derive(Debug, Clone)]
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
}

/// Why a filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a filter.
    #[error("log.level {level:?} is not a valid filter (e.g. \"info\" or \"info,outboxd=debug\"): {source}")]
    Filter {
        /// The text.
        level: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The subscriber is gone.
    #[error("cannot change the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// Installs the process's subscriber, writing to stderr. `RUST_LOG`, when set, wins over
/// `level` (now and on reloads), so an operator can turn up one run from the shell.
pub fn init(level: &str, format: LogFormat) -> Result<LogControl, LogError> {
    let (filter, handle) = reload::Layer::new(filter_for(level)?);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let writer = std::io::stderr;
    if json {
        registry
            .with(fmt::layer().json().with_writer(writer))
            .init();
    } else {
        registry.with(fmt::layer().with_writer(writer)).init();
    }
    Ok(LogControl { filter: handle })
}

impl LogControl {
    /// Replaces the filter with `level` (unless `RUST_LOG` is set, which keeps winning).
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = filter_for(level)?;
        self.filter.reload(filter)?;
        Ok(())
    }
}

fn filter_for(level: &str) -> Result<EnvFilter, LogError> {
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| level.to_owned());
    EnvFilter::try_new(&text).map_err(|source| LogError::Filter {
        level: text,
        source,
    })
}
