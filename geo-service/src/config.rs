//! One typed configuration: defaults, then `GEO_*` environment variables,
//! then command-line flags, validated before anything starts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bangui_runtime::LogFormat;
use clap::Parser;

use crate::mmdb::DatabaseSource;

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

    /// Watch the database files and reload them when they are replaced
    /// (e.g. by geoipupdate). `--watch false` turns it off.
    #[arg(long, env = "GEO_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch: bool,

    /// Most IP addresses accepted by one LookupBatch request.
    #[arg(
        long,
        env = "GEO_MAX_BATCH",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
    )]
    pub max_batch: u32,

    /// The persistent cache: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(long, env = "GEO_DATABASE_URL", default_value = "sqlite://geo.db", hide_env_values = true)]
    pub database_url: String,

    /// How often cached answers and `last_seen` refreshes are written to the
    /// persistent cache (also at shutdown).
    #[arg(long, env = "GEO_FLUSH_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,

    /// How long a negative (an address nobody could place) stays in memory.
    #[arg(long, env = "GEO_NEGATIVE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub negative_ttl: Duration,

    /// Most fallback answers kept in memory.
    #[arg(long, env = "GEO_CACHE_ANSWERS", default_value_t = 100_000)]
    pub cache_answers: usize,

    /// Most negatives kept in memory.
    #[arg(long, env = "GEO_CACHE_NEGATIVES", default_value_t = 100_000)]
    pub cache_negatives: usize,

    /// Ask ip-api.com for addresses the local databases cannot place, when a
    /// request allows it. Off by default: the free tier is plain HTTP, so the
    /// addresses leave the host unencrypted.
    #[arg(long, env = "GEO_HTTP_FALLBACK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub http_fallback: bool,

    /// The fallback API's base URL.
    #[arg(long, env = "GEO_FALLBACK_URL", default_value = "http://ip-api.com", value_parser = parse_base_url)]
    pub fallback_url: String,

    /// Batch requests (`POST /batch`, 100 addresses each) allowed a minute.
    #[arg(long, env = "GEO_FALLBACK_BATCH_PER_MINUTE", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    pub fallback_batch_per_minute: u32,

    /// Single-address requests (`GET /json/{ip}`) allowed a minute.
    #[arg(long, env = "GEO_FALLBACK_SINGLE_PER_MINUTE", default_value_t = 45, value_parser = clap::value_parser!(u32).range(1..))]
    pub fallback_single_per_minute: u32,

    /// Timeout of one fallback request.
    #[arg(long, env = "GEO_FALLBACK_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub fallback_timeout: Duration,

    /// Retries of a fallback request that timed out or failed with 5xx.
    #[arg(long, env = "GEO_FALLBACK_RETRIES", default_value_t = 2)]
    pub fallback_retries: u32,

    /// Log format.
    #[arg(long, env = "GEO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info`,
    /// `geo_service=debug`).
    #[arg(long, env = "GEO_LOG", default_value = "info")]
    pub log: String,

    /// Serve gRPC over TLS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, env = "GEO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "GEO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA (mTLS; needs `--tls-cert`).
    #[arg(long, env = "GEO_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// When set, every geo RPC but health and reflection needs
    /// `authorization: Bearer <token>` (the control-service's `--geo-auth-token`).
    #[arg(long, env = "GEO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<secrecy::SecretString>,

    /// How long in-flight RPCs may take to finish after SIGTERM.
    #[arg(long, env = "GEO_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The cache limits this configuration asks for.
    pub fn cache_limits(&self) -> crate::cache::CacheLimits {
        crate::cache::CacheLimits {
            answers: self.cache_answers,
            negatives: self.cache_negatives,
            negative_ttl: self.negative_ttl,
            ..crate::cache::CacheLimits::default()
        }
    }

    /// The fallback settings, if the fallback is enabled.
    pub fn fallback(&self) -> Option<crate::fallback::FallbackConfig> {
        self.http_fallback.then(|| crate::fallback::FallbackConfig {
            base_url: self.fallback_url.clone(),
            batch_per_minute: self.fallback_batch_per_minute,
            single_per_minute: self.fallback_single_per_minute,
            timeout: self.fallback_timeout,
            retries: self.fallback_retries,
        })
    }

    /// The server TLS configuration, if TLS is on.
    pub fn server_tls(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                bangui_runtime::grpc::server_tls(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The database URL with any password replaced, for logs.
    pub fn database_url_redacted(&self) -> String {
        bangui_runtime::redact_url(&self.database_url)
    }
}

/// An `http://` or `https://` URL with a host.
fn parse_base_url(value: &str) -> Result<String, String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| format!("{value:?} is not an http:// or https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{value:?} has no host"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
#[cfg(test)]
mod tests {
    use bangui_runtime::ConfigExt;

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
        let err =
            Config::try_from_args(["geo-service", "--mmdb", "x", "--flush-interval", "often"]).unwrap_err().to_string();
        assert!(err.contains("--flush-interval"), "{err}");
        let err = Config::try_from_args(["geo-service", "--mmdb", "x", "--fallback-url", "ip-api.com"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--fallback-url") && err.contains("not an http"), "{err}");
        let err = Config::try_from_args(["geo-service", "--mmdb", "builtin:nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown built-in database"), "{err}");
    }
}
