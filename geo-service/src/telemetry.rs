//! Logging setup: `tracing` to stdout, JSON in production.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` is an `EnvFilter` directive.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid --log / GEO_LOG filter {filter:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init()?
        }
        LogFormat::Text => registry.with(fmt::layer()).try_init()?,
    }
    Ok(())
}
