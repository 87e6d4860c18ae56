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

    /// Address of a second, plaintext gRPC port serving only
    /// `grpc.health.v1` (no auth, no reflection): the kubelet's gRPC probe
    /// speaks plaintext, so with --tls-cert it needs a port of its own.
    /// Unset: no health port.
    #[arg(long, env = "GEO_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

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

    /// The fallback API's base URL; `https://pro.ip-api.com` with
    /// `--fallback-api-key` for ip-api's paid plan over TLS.
    #[arg(long, env = "GEO_FALLBACK_URL", default_value = "http://ip-api.com", value_parser = parse_base_url)]
    pub fallback_url: String,

    /// ip-api's paid-plan key, sent as `key=` on every fallback request
    /// (never logged).
    #[arg(long, env = "GEO_FALLBACK_API_KEY", hide_env_values = true)]
    pub fallback_api_key: Option<secrecy::SecretString>,

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
    /// Required unless `--listen` is a loopback address or
    /// `--allow-unauthenticated` is given.
    #[arg(long, env = "GEO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<secrecy::SecretString>,

    /// Serve without `--auth-token` on an address other than loopback:
    /// anyone who reaches the port may then purge the cache and reload the
    /// databases.
    #[arg(long, env = "GEO_ALLOW_UNAUTHENTICATED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_unauthenticated: bool,

    /// LookupBatch calls decoded and answered at once; one more is refused
    /// with RESOURCE_EXHAUSTED before its body is read. A full batch holds
    /// about 13 MB while it is answered, and each already spreads over every
    /// core, so more at once adds memory, not throughput.
    #[arg(long, env = "GEO_MAX_CONCURRENT_BATCHES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_batches: u32,

    /// LookupBatch calls that wait for a turn when `--max-concurrent-batches`
    /// are being answered; one more is refused with RESOURCE_EXHAUSTED. A
    /// waiting call is not decoded, but HTTP/2 may already hold its request
    /// (at most the batch decode limit), so this bounds that memory too.
    #[arg(long, env = "GEO_MAX_QUEUED_BATCHES", default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub max_queued_batches: u32,

    /// HTTP/2 streams (RPCs) open at once on one connection.
    #[arg(long, env = "GEO_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,

    /// Requests handled at once in the process (health aside); one more is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "GEO_GRPC_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_in_flight: u32,

    /// Connections open at once on each port (gRPC, health, metrics; each
    /// its own count); one more is accepted and closed at once. An idle
    /// connection holds about 20 KiB.
    #[arg(long, env = "GEO_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,

    /// Streaming calls (Health/Watch, LookupStream, reflection) open at once
    /// in the process, the gRPC and health ports together; one more is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "GEO_GRPC_MAX_STREAMING_CALLS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub grpc_max_streaming_calls: u32,

    /// A streaming call open this long is ended with UNAVAILABLE (the client
    /// opens it again).
    #[arg(long, env = "GEO_GRPC_STREAMING_CALL_MAX_AGE", default_value = "30m", value_parser = bangui_runtime::limits::parse_max_age)]
    pub grpc_streaming_call_max_age: Duration,

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
            api_key: self.fallback_api_key.clone(),
            batch_per_minute: self.fallback_batch_per_minute,
            single_per_minute: self.fallback_single_per_minute,
            timeout: self.fallback_timeout,
            retries: self.fallback_retries,
        })
    }

    /// Checks across settings that clap cannot express; the message names
    /// the settings (main exits 2 with it, as for any bad flag).
    pub fn check(&self) -> Result<(), String> {
        if let Some(clash) = bangui_runtime::grpc::health_listen_clash(self.listen, self.health_listen) {
            return Err(clash);
        }
        if self.auth_token.is_none() && !self.listen.ip().is_loopback() && !self.allow_unauthenticated {
            return Err(format!(
                "--listen {} is not a loopback address and no --auth-token (GEO_AUTH_TOKEN) is set: every geo RPC, \
                 PurgeStale and ReloadDatabases included, would be open to anyone who reaches the port; set \
                 GEO_AUTH_TOKEN (the control-service's --geo-auth-token), or pass --allow-unauthenticated to serve \
                 open on purpose",
                self.listen
            ));
        }
        Ok(())
    }

    /// The transport limits this configuration asks for.
    pub fn serve_limits(&self) -> bangui_runtime::grpc::ServeLimits {
        bangui_runtime::grpc::ServeLimits {
            max_concurrent_streams: self.grpc_max_concurrent_streams,
            max_in_flight: usize::try_from(self.grpc_max_in_flight).unwrap_or(usize::MAX),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_streaming_calls: usize::try_from(self.grpc_max_streaming_calls).unwrap_or(usize::MAX),
            streaming_call_max_age: self.grpc_streaming_call_max_age,
            ..bangui_runtime::grpc::ServeLimits::default()
        }
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
        let limits = config.serve_limits();
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_streaming_calls, 64);
        assert_eq!(limits.streaming_call_max_age, Duration::from_secs(30 * 60));
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
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--grpc-max-streaming-calls", "0"),
            ("--grpc-streaming-call-max-age", "0s"),
            ("--grpc-streaming-call-max-age", "500ms"),
        ] {
            let err = Config::try_from_args(["geo-service", "--mmdb", "x", flag, value]).unwrap_err().to_string();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn the_health_port_is_a_port_of_its_own() {
        let check = |args: &[&str]| {
            let mut all = vec!["geo-service", "--mmdb", "builtin:sample", "--listen", "127.0.0.1:50051"];
            all.extend_from_slice(args);
            Config::try_from_args(all).unwrap().check()
        };
        let error = check(&["--health-listen", "127.0.0.1:50051"]).unwrap_err();
        assert!(
            error.contains("--health-listen 127.0.0.1:50051") && error.contains("--listen 127.0.0.1:50051"),
            "{error}"
        );
        assert!(check(&["--health-listen", "127.0.0.1:50061"]).is_ok());
        assert!(check(&[]).is_ok());
    }

    #[test]
    fn off_loopback_a_token_or_an_explicit_opt_out_is_needed() {
        let check = |args: &[&str]| {
            let mut all = vec!["geo-service", "--mmdb", "builtin:sample"];
            all.extend_from_slice(args);
            Config::try_from_args(all).unwrap().check()
        };
        let err = check(&[]).unwrap_err();
        assert!(err.contains("0.0.0.0:50051") && err.contains("GEO_AUTH_TOKEN"), "{err}");
        assert!(check(&["--auth-token", "t"]).is_ok());
        assert!(check(&["--allow-unauthenticated"]).is_ok());
        assert!(check(&["--listen", "127.0.0.1:0"]).is_ok());
        assert!(check(&["--listen", "[::1]:0"]).is_ok());
    }
}
