//! Logging setup: `tracing` to stdout, JSON in production.

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive;
/// `setting` names where it came from, for the error message.
pub fn init(format: LogFormat, filter: &str, setting: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid {setting} filter {filter:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init()?
        }
        LogFormat::Text => registry.with(fmt::layer()).try_init()?,
    }
    Ok(())
}
