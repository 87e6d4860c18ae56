//! One typed configuration: defaults, then `GEO_*` environment variables,
//! then command-line flags, validated before anything starts.

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};

use crate::mmdb::DatabaseSource;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Text,
}

/// The geo-service configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "geo-service", version, about = "BanGUI geo-service: where IP addresses are")]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GEO_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address the Prometheus metrics endpoint (`/metrics`) listens on.
    #[arg(long, env = "GEO_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub metrics_listen: SocketAddr,

    /// MaxMind-format database files, in lookup order (repeat the flag or
    /// separate with commas). `builtin:sample` is a tiny embedded sample.
    #[arg(
        long = "mmdb",
        env = "GEO_MMDB",
        value_delimiter = ',',
        required = true,
        value_parser = DatabaseSource::parse,
    )]
    pub mmdb: Vec<DatabaseSource>,

    /// Most IP addresses accepted by one LookupBatch request.
    #[arg(
        long,
        env = "GEO_MAX_BATCH",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
    )]
    pub max_batch: u32,

    /// Log format.
    #[arg(long, env = "GEO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info`,
    /// `geo_service=debug`).
    #[arg(long, env = "GEO_LOG", default_value = "info")]
    pub log: String,

    /// How long in-flight RPCs may take to finish after SIGTERM.
    #[arg(long, env = "GEO_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// Parses flags and environment, exiting with a message that names the
    /// setting on error.
    pub fn from_env_and_args() -> Self {
        Self::parse()
    }

    /// Parses an explicit argument list (and the environment), for tests.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }

    /// A configuration for tests: loopback on port 0, the given databases.
    pub fn for_tests(mmdb: Vec<DatabaseSource>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mmdb,
            max_batch: 10_000,
            log_format: LogFormat::Text,
            log: "info".into(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_come_comma_separated_or_repeated() {
        let config =
            Config::try_from_args(["geo-service", "--mmdb", "a.mmdb,b.mmdb", "--mmdb", "builtin:sample"]).unwrap();
        assert_eq!(
            config.mmdb,
            vec![DatabaseSource::File("a.mmdb".into()), DatabaseSource::File("b.mmdb".into()), DatabaseSource::Sample]
        );
        assert_eq!(config.max_batch, 10_000);
        assert_eq!(config.listen.to_string(), "0.0.0.0:50051");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::try_from_args(["geo-service"]).unwrap_err().to_string();
        assert!(err.contains("--mmdb"), "{err}");
        let err = Config::try_from_args(["geo-service", "--mmdb", "x", "--max-batch", "0"]).unwrap_err().to_string();
        assert!(err.contains("--max-batch"), "{err}");
        let err = Config::try_from_args(["geo-service", "--mmdb", "x", "--listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
        let err = Config::try_from_args(["geo-service", "--mmdb", "builtin:nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown built-in database"), "{err}");
    }
}
