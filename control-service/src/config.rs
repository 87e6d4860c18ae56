//! One typed configuration: defaults, then `CONTROL_*` environment
//! variables, then command-line flags, validated before anything starts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bangui_runtime::{LogFormat, grpc::ServeLimits};
use clap::Parser;

use crate::{auth::ThrottlePolicy, leader::ElectorSettings};
use bangui_fail2ban::{SocketSettings, StartSettings};

/// Subcommands (without one, the service runs).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Reads a password from standard input and prints its argon2id PHC
    /// string, for --admin-password-hash / CONTROL_ADMIN_PASSWORD_HASH.
    HashPassword,
}

/// hostname-pid: unique per process, readable in GetLeader.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control".to_owned());
    format!("{host}-{}", std::process::id())
}

fn default_hash_concurrency() -> u16 {
    u16::try_from(crate::auth::hasher::default_concurrency()).unwrap_or(1)
}

fn parse_phc(text: &str) -> Result<String, String> {
    crate::auth::password::check_phc(text.trim())?;
    Ok(text.trim().to_owned())
}

/// Whether `url` starts with `scheme://` (any case).
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.trim_start().split_once("://").is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme))
}

/// The control-service configuration (bootstrap settings; runtime settings
/// live in the control database).
#[derive(Debug, Clone, Parser)]
#[command(name = "control-service", version, about = "BanGUI control-service: fail2ban, history, auth and jobs")]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the gRPC server listens on.
    #[arg(long, env = "CONTROL_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// Address the agent port listens on: `bangui.agent.v1.AgentService`
    /// (Enroll, Attach) for the fleet's fail2ban-agents, outside the
    /// session gate (agents authenticate with their enrollment token or
    /// host credential), with the gRPC port's TLS settings.
    #[arg(long, env = "CONTROL_AGENT_LISTEN", default_value = "0.0.0.0:50053")]
    pub agent_listen: SocketAddr,

    /// Agent streams (Attach) open at once on this replica, apart from
    /// --grpc-max-in-flight; one more is answered RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CONTROL_AGENT_MAX_STREAMS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub agent_max_streams: u32,

    /// Address the Prometheus metrics endpoint (`/metrics`) listens on.
    #[arg(long, env = "CONTROL_METRICS_LISTEN", default_value = "0.0.0.0:9465")]
    pub metrics_listen: SocketAddr,

    /// Address of a second, plaintext gRPC port serving only
    /// `grpc.health.v1` (no auth, no reflection): the kubelet's gRPC probe
    /// speaks plaintext, so with --tls-cert it needs a port of its own.
    /// Unset: no health port.
    #[arg(long, env = "CONTROL_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// The control database: `sqlite://PATH` (created if missing; one
    /// replica) or `postgres://USER:PASSWORD@HOST/DB` (several replicas).
    #[arg(long, env = "CONTROL_DATABASE_URL", default_value = "sqlite://control.db", hide_env_values = true)]
    pub database_url: String,

    /// fail2ban's control socket (`socket` in fail2ban.conf).
    #[arg(long, env = "CONTROL_FAIL2BAN_SOCKET", default_value = "/var/run/fail2ban/fail2ban.sock")]
    pub fail2ban_socket: PathBuf,

    /// Serve the fail2ban at --fail2ban-socket as the host `local`. `false`:
    /// a pure control plane (every host has its agent), which needs no
    /// socket and no host mount.
    #[arg(long, env = "CONTROL_LOCAL_FAIL2BAN", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_fail2ban: bool,

    /// Deadline for one fail2ban command, including the wait for a free slot.
    #[arg(long, env = "CONTROL_FAIL2BAN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub fail2ban_timeout: Duration,

    /// Deadline for connecting to fail2ban's socket.
    #[arg(long, env = "CONTROL_FAIL2BAN_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub fail2ban_connect_timeout: Duration,

    /// fail2ban commands in flight at once (fail2ban serves one at a time).
    #[arg(
        long,
        env = "CONTROL_FAIL2BAN_MAX_IN_FLIGHT",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=16),
    )]
    pub fail2ban_max_in_flight: u16,

    /// fail2ban's configuration directory (e.g. /etc/fail2ban). Needed only
    /// by StartJail, which starts a stopped jail through fail2ban-client.
    #[arg(long, env = "CONTROL_FAIL2BAN_CONFIG_DIR")]
    pub fail2ban_config_dir: Option<PathBuf>,

    /// fail2ban's database file for the history sync (default: ask fail2ban,
    /// `get dbfile`). Opened read-only.
    #[arg(long, env = "CONTROL_FAIL2BAN_DB")]
    pub fail2ban_db: Option<PathBuf>,

    /// The fail2ban-client binary StartJail runs.
    #[arg(long, env = "CONTROL_FAIL2BAN_CLIENT", default_value = "fail2ban-client")]
    pub fail2ban_client: PathBuf,

    /// The geo-service, e.g. `http://geo-service-headless:50051`, or several
    /// URLs separated by commas (one scheme for all). Each host is resolved
    /// again every `--geo-resolve-interval` and calls are balanced over every
    /// address that answers its health check. Without it active bans come
    /// back without countries.
    #[arg(long, env = "CONTROL_GEO_ENDPOINT")]
    pub geo_endpoint: Option<String>,

    /// CA (PEM) that the geo-service's certificate must chain to; turns on
    /// TLS to it (use an `https://` endpoint).
    #[arg(long, env = "CONTROL_GEO_TLS_CA")]
    pub geo_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for a geo-service that requires mTLS.
    #[arg(long, env = "CONTROL_GEO_TLS_CERT", requires_all = ["geo_tls_key", "geo_tls_ca"])]
    pub geo_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--geo-tls-cert`.
    #[arg(long, env = "CONTROL_GEO_TLS_KEY", requires = "geo_tls_cert")]
    pub geo_tls_key: Option<PathBuf>,

    /// Bearer token sent to the geo-service (its `GEO_AUTH_TOKEN`).
    #[arg(long, env = "CONTROL_GEO_AUTH_TOKEN", hide_env_values = true)]
    pub geo_auth_token: Option<secrecy::SecretString>,

    /// Deadline for one geo-service call (retries included).
    #[arg(long, env = "CONTROL_GEO_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub geo_timeout: Duration,

    /// How often the hosts of `--geo-endpoint` are resolved again and their
    /// addresses' health checked.
    #[arg(long, env = "CONTROL_GEO_RESOLVE_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub geo_resolve_interval: Duration,

    /// The master password as an argon2id PHC string (e.g. from a
    /// Kubernetes Secret; `control-service hash-password` prints one). When
    /// set it is the password: Setup and ChangePassword are refused.
    #[arg(long, env = "CONTROL_ADMIN_PASSWORD_HASH", hide_env_values = true, value_parser = parse_phc)]
    pub admin_password_hash: Option<String>,

    /// Where the one-time setup token goes while no password exists
    /// (default: `setup-token` beside a SQLite database file, else in the
    /// working directory).
    #[arg(long, env = "CONTROL_SETUP_TOKEN_FILE")]
    pub setup_token_file: Option<PathBuf>,

    /// argon2 password checks and hashes run at once (each holds 19 MiB;
    /// default: the CPUs this process may use, at most 4).
    #[arg(
        long,
        env = "CONTROL_PASSWORD_HASH_CONCURRENCY",
        default_value_t = default_hash_concurrency(),
        value_parser = clap::value_parser!(u16).range(1..=64),
    )]
    pub password_hash_concurrency: u16,

    /// Password checks that may wait for a turn; beyond them RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CONTROL_PASSWORD_HASH_QUEUE",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(0..=1024),
    )]
    pub password_hash_queue: u16,

    /// Failed logins allowed from one client address (IPv6: its /64) within `--login-failure-window`.
    #[arg(long, env = "CONTROL_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,

    /// Failed logins from all addresses together within the window past
    /// which every login waits first (nobody is refused for it).
    #[arg(long, env = "CONTROL_LOGIN_MAX_FAILURES_GLOBAL", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures_global: u32,

    /// The longest wait of a login while many fail overall (it grows by a
    /// tenth of this per failure past `--login-max-failures-global`).
    #[arg(long, env = "CONTROL_LOGIN_SLOWDOWN_MAX", default_value = "3s", value_parser = humantime::parse_duration)]
    pub login_slowdown_max: Duration,

    /// The window over which failed logins are counted.
    #[arg(long, env = "CONTROL_LOGIN_FAILURE_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_failure_window: Duration,

    /// How often fail2ban, the geo-service and the database are probed for
    /// the per-dependency health statuses.
    #[arg(long, env = "CONTROL_PROBE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// This replica's identity in the leader lease (default: hostname-pid).
    #[arg(long, env = "CONTROL_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// How long a lease lasts without renewal; the leader renews every third of it.
    #[arg(long, env = "CONTROL_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// A leader that could not renew for this long stops acting (default:
    /// two thirds of the ttl; must be shorter than the ttl).
    #[arg(long, env = "CONTROL_LEASE_RENEW_DEADLINE", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Option<Duration>,

    /// How often a follower tries to take the lease (and the leader takes
    /// run-now requests).
    #[arg(long, env = "CONTROL_LEASE_RETRY", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub lease_retry: Duration,

    /// Log format.
    #[arg(long, env = "CONTROL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info`,
    /// `control_service=debug`).
    #[arg(long, env = "CONTROL_LOG", default_value = "info")]
    pub log: String,

    /// Serve gRPC over TLS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, env = "CONTROL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "CONTROL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA (mTLS; needs `--tls-cert`).
    #[arg(long, env = "CONTROL_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// RPCs open at once on one HTTP/2 connection (the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS; clients queue the rest).
    #[arg(
        long,
        env = "CONTROL_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=10_000),
    )]
    pub grpc_max_concurrent_streams: u32,

    /// RPCs handled at once by the process (health checks aside); one more
    /// is answered RESOURCE_EXHAUSTED with RetryInfo at once, never queued.
    #[arg(
        long,
        env = "CONTROL_GRPC_MAX_IN_FLIGHT",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub grpc_max_in_flight: u32,

    /// Largest request message, in bytes; a larger one is refused
    /// (OUT_OF_RANGE) before it is read. The largest legitimate request (an
    /// UpdateSettings with every schedule) is well under 4 KiB.
    #[arg(
        long,
        env = "CONTROL_GRPC_MAX_REQUEST_BYTES",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..=4 * 1024 * 1024),
    )]
    pub grpc_max_request_bytes: u32,

    /// Deadline of every RPC (the client's own deadline when shorter); past
    /// it the RPC ends with CANCELLED and its in-flight slot is freed. Keep
    /// it above StartJail's (the larger of --fail2ban-timeout and 30s).
    #[arg(long, env = "CONTROL_GRPC_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub grpc_request_timeout: Duration,

    /// Connections open at once on each port (gRPC, health, metrics; each
    /// its own count); one more is accepted and closed at once. An idle
    /// connection holds about 20 KiB.
    #[arg(
        long,
        env = "CONTROL_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub max_connections: u32,

    /// Streaming calls (Health/Watch, reflection) open at once in the
    /// process, the gRPC and health ports together; one more is answered
    /// RESOURCE_EXHAUSTED with RetryInfo at once.
    #[arg(
        long,
        env = "CONTROL_GRPC_MAX_STREAMING_CALLS",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
    )]
    pub grpc_max_streaming_calls: u32,

    /// A streaming call open this long is ended with UNAVAILABLE (the client
    /// opens it again): --grpc-request-timeout bounds only the wait for a
    /// response to start.
    #[arg(
        long,
        env = "CONTROL_GRPC_STREAMING_CALL_MAX_AGE",
        default_value = "30m",
        value_parser = bangui_runtime::limits::parse_max_age,
    )]
    pub grpc_streaming_call_max_age: Duration,

    /// The server sends an HTTP/2 PING on a connection this often.
    #[arg(long, env = "CONTROL_GRPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_interval: Duration,

    /// A connection that does not answer a PING within this is closed.
    #[arg(long, env = "CONTROL_GRPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_timeout: Duration,

    /// How long in-flight RPCs may take to finish after SIGTERM.
    #[arg(long, env = "CONTROL_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Let blocklist sources download from private, loopback and other
    /// non-public addresses. Off: every hop of a download must resolve to
    /// public addresses only (no SSRF into the cluster).
    #[arg(long, env = "CONTROL_BLOCKLIST_ALLOW_PRIVATE")]
    pub blocklist_allow_private: bool,

    /// Deadline of one attempt at downloading a blocklist.
    #[arg(long, env = "CONTROL_BLOCKLIST_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub blocklist_timeout: Duration,

    /// Networks never banned by a blocklist import, whatever a list says
    /// (comma-separated addresses or CIDRs, e.g. your own ranges).
    #[arg(long, env = "CONTROL_NEVER_BAN", value_delimiter = ',', value_parser = parse_network)]
    pub never_ban: Vec<ipnet::IpNet>,
}

/// An address (as a /32 or /128) or a network.
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    text.parse::<ipnet::IpNet>().map(|net| net.trunc()).map_err(|_| format!("{text:?} is not an address or a network"))
}

/// A duration of at least 100 ms (a re-resolution loop must not spin).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(100) {
        return Err(format!("{text:?} is too short: at least 100ms"));
    }
    Ok(duration)
}

impl Config {
    /// Checks across settings that clap cannot express; the message names
    /// the settings (main exits 2 with it, as for any bad flag).
    pub fn check(&self) -> Result<(), String> {
        if let Some(clash) = bangui_runtime::grpc::health_listen_clash(self.listen, self.health_listen) {
            return Err(clash);
        }
        if self.agent_listen.port() != 0 && self.agent_listen.port() == self.listen.port() {
            return Err(format!(
                "--agent-listen {} and --listen {} name the same port: the agent port needs one of its own",
                self.agent_listen, self.listen
            ));
        }
        if let Some(endpoint) = &self.geo_endpoint {
            let tls_flag = [("--geo-tls-ca", &self.geo_tls_ca), ("--geo-tls-cert", &self.geo_tls_cert)]
                .into_iter()
                .find_map(|(flag, value)| value.is_some().then_some(flag));
            if let Some(flag) = tls_flag
                && !has_scheme(endpoint, "https")
            {
                return Err(format!(
                    "--geo-endpoint {endpoint:?} is not an https:// URL but {flag} is set: TLS would not be used \
                     and the geo-service token would travel in cleartext; use https:// with {flag}"
                ));
            }
        }
        Ok(())
    }

    /// A warning when the geo-service token goes over plaintext HTTP/2.
    pub fn geo_plaintext_token_warning(&self) -> Option<String> {
        let endpoint = self.geo_endpoint.as_deref()?;
        (self.geo_auth_token.is_some() && self.geo_tls_ca.is_none() && has_scheme(endpoint, "http")).then(|| {
            format!(
                "--geo-auth-token is sent in cleartext to --geo-endpoint {endpoint}: anyone on that network path \
                 can read it; use an https:// endpoint with --geo-tls-ca, or keep the path private \
                 (loopback, or a pod network encrypted by a service mesh)"
            )
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

    /// The database URL without its password, for logs.
    pub fn database_url_redacted(&self) -> String {
        bangui_runtime::redact_url(&self.database_url)
    }

    /// The elector's settings, validated.
    pub fn elector(&self) -> anyhow::Result<ElectorSettings> {
        let deadline = self.lease_renew_deadline.unwrap_or(self.lease_ttl * 2 / 3);
        if self.lease_ttl < Duration::from_millis(300) {
            anyhow::bail!("--lease-ttl must be at least 300ms");
        }
        if deadline >= self.lease_ttl || deadline <= self.lease_ttl / 3 {
            anyhow::bail!(
                "--lease-renew-deadline ({deadline:?}) must be longer than a renew period (ttl/3) and shorter than --lease-ttl ({:?})",
                self.lease_ttl
            );
        }
        if self.lease_retry.is_zero() {
            anyhow::bail!("--lease-retry must be more than zero");
        }
        let replica = self.replica_id.clone().unwrap_or_else(default_replica_id);
        Ok(ElectorSettings { replica, ttl: self.lease_ttl, renew_deadline: deadline, retry: self.lease_retry })
    }

    pub fn throttle(&self) -> ThrottlePolicy {
        ThrottlePolicy {
            per_client: self.login_max_failures,
            global: self.login_max_failures_global,
            window: self.login_failure_window,
        }
    }

    /// The password hashing bounds.
    pub fn hash_limits(&self) -> crate::auth::HashLimits {
        crate::auth::HashLimits {
            concurrency: usize::from(self.password_hash_concurrency),
            queue: usize::from(self.password_hash_queue),
        }
    }

    /// Where the setup token goes.
    pub fn setup_token_path(&self) -> PathBuf {
        crate::auth::setup_token::default_path(self.setup_token_file.as_deref(), &self.database_url)
    }

    /// TLS to the geo-service, if configured.
    pub fn geo_tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use anyhow::Context as _;
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).with_context(|| format!("cannot read the geo-service {what} {}", path.display()))
        };
        let mut tls = match &self.geo_tls_ca {
            Some(ca) => tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "CA (--geo-tls-ca)")?)),
            None => return Ok(None),
        };
        if let (Some(cert), Some(key)) = (&self.geo_tls_cert, &self.geo_tls_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert, "client certificate (--geo-tls-cert)")?,
                read(key, "client key (--geo-tls-key)")?,
            ));
        }
        Ok(Some(tls))
    }

    /// The gRPC server's transport limits, validated.
    pub fn serve_limits(&self) -> anyhow::Result<ServeLimits> {
        for (value, flag) in [
            (self.grpc_request_timeout, "--grpc-request-timeout"),
            (self.grpc_keepalive_interval, "--grpc-keepalive-interval"),
            (self.grpc_keepalive_timeout, "--grpc-keepalive-timeout"),
        ] {
            if value.is_zero() {
                anyhow::bail!("{flag} must be more than zero");
            }
        }
        Ok(ServeLimits {
            max_concurrent_streams: self.grpc_max_concurrent_streams,
            max_in_flight: self.grpc_max_in_flight as usize,
            http2_keepalive_interval: self.grpc_keepalive_interval,
            http2_keepalive_timeout: self.grpc_keepalive_timeout,
            request_timeout: self.grpc_request_timeout,
            max_connections: self.max_connections as usize,
            max_streaming_calls: self.grpc_max_streaming_calls as usize,
            streaming_call_max_age: self.grpc_streaming_call_max_age,
        })
    }

    /// The largest request message the services decode.
    pub fn max_request_bytes(&self) -> usize {
        self.grpc_max_request_bytes as usize
    }

    pub fn socket_settings(&self) -> SocketSettings {
        SocketSettings {
            path: self.fail2ban_socket.clone(),
            connect_timeout: self.fail2ban_connect_timeout,
            reply_timeout: self.fail2ban_timeout,
            max_in_flight: usize::from(self.fail2ban_max_in_flight),
        }
    }

    pub fn fetch_settings(&self) -> crate::blocklist::fetch::FetchSettings {
        crate::blocklist::fetch::FetchSettings {
            allow_private: self.blocklist_allow_private,
            timeout: self.blocklist_timeout,
            ..Default::default()
        }
    }

    pub fn blocklist_settings(&self) -> crate::blocklist::BlocklistSettings {
        crate::blocklist::BlocklistSettings { never_ban: self.never_ban.clone() }
    }

    pub fn start_settings(&self) -> StartSettings {
        StartSettings {
            client_binary: self.fail2ban_client.clone(),
            config_dir: self.fail2ban_config_dir.clone(),
            // Reading the configuration takes longer than one command.
            timeout: self.fail2ban_timeout.max(Duration::from_secs(30)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bangui_runtime::ConfigExt;

    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::try_from_args(["control-service"]).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:50052");
        assert_eq!(config.metrics_listen.to_string(), "0.0.0.0:9465");
        assert_eq!(config.database_url, "sqlite://control.db");
        assert_eq!(config.fail2ban_socket, PathBuf::from("/var/run/fail2ban/fail2ban.sock"));
        assert!(config.geo_endpoint.is_none());
        let limits = config.serve_limits().unwrap();
        assert_eq!(limits.max_concurrent_streams, 32);
        assert_eq!(limits.max_in_flight, 64);
        assert_eq!(limits.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(limits.http2_keepalive_timeout, Duration::from_secs(10));
        assert_eq!(limits.request_timeout, Duration::from_secs(60));
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_streaming_calls, 64);
        assert_eq!(limits.streaming_call_max_age, Duration::from_secs(30 * 60));
        assert_eq!(config.max_request_bytes(), 64 * 1024);
        assert_eq!(config.agent_listen.to_string(), "0.0.0.0:50053");
        assert_eq!(config.agent_max_streams, 2000);
    }

    #[test]
    fn the_agent_port_is_a_port_of_its_own() {
        let check = |args: &[&str]| Config::try_from_args(["control-service"].iter().chain(args)).unwrap().check();
        let error = check(&["--listen", "0.0.0.0:50052", "--agent-listen", "127.0.0.1:50052"]).unwrap_err();
        assert!(error.contains("--agent-listen") && error.contains("--listen"), "{error}");
        assert!(check(&["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"]).is_ok());
        let error = Config::try_from_args(["control-service", "--agent-max-streams", "0"]).unwrap_err();
        assert!(error.to_string().contains("--agent-max-streams"), "{error}");
    }

    #[test]
    fn geo_tls_needs_an_https_endpoint() {
        let parse = |args: &[&str]| Config::try_from_args(["control-service"].iter().chain(args)).unwrap();
        // check() reads no file: the CA path need not exist.
        let ca = "ca.pem".to_owned();
        let plain = parse(&["--geo-endpoint", "http://geo:50051", "--geo-tls-ca", &ca]);
        let error = plain.check().unwrap_err();
        assert!(error.contains("--geo-endpoint") && error.contains("--geo-tls-ca"), "{error}");
        assert!(parse(&["--geo-endpoint", "HTTPS://geo:50051", "--geo-tls-ca", &ca]).check().is_ok());
        assert!(parse(&["--geo-endpoint", "http://geo:50051"]).check().is_ok());
        assert!(parse(&["--geo-tls-ca", &ca]).check().is_ok(), "no endpoint: TLS settings unused");
    }

    #[test]
    fn the_health_port_is_a_port_of_its_own() {
        let check = |args: &[&str]| Config::try_from_args(["control-service"].iter().chain(args)).unwrap().check();
        assert_eq!(Config::try_from_args(["control-service"]).unwrap().health_listen, None);
        let error = check(&["--listen", "0.0.0.0:50052", "--health-listen", "0.0.0.0:50052"]).unwrap_err();
        assert!(error.contains("--health-listen 0.0.0.0:50052") && error.contains("--listen 0.0.0.0:50052"), "{error}");
        assert!(check(&["--health-listen", "0.0.0.0:50062"]).is_ok());
        // Port 0 is a fresh port each time: no clash.
        assert!(check(&["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"]).is_ok());
    }

    #[test]
    fn a_token_over_plaintext_is_warned_about() {
        let parse = |args: &[&str]| Config::try_from_args(["control-service"].iter().chain(args)).unwrap();
        let warning = parse(&["--geo-endpoint", "http://geo:50051", "--geo-auth-token", "t"])
            .geo_plaintext_token_warning()
            .unwrap();
        assert!(warning.contains("--geo-auth-token") && warning.contains("--geo-endpoint"), "{warning}");
        assert!(parse(&["--geo-endpoint", "http://geo:50051"]).geo_plaintext_token_warning().is_none());
        let tls = parse(&["--geo-endpoint", "https://geo:50051", "--geo-tls-ca", "ca.pem", "--geo-auth-token", "t"]);
        assert!(tls.geo_plaintext_token_warning().is_none());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let error = Config::try_from_args(["control-service", "--fail2ban-max-in-flight", "0"]).unwrap_err();
        assert!(error.to_string().contains("--fail2ban-max-in-flight"), "{error}");
        let error = Config::try_from_args(["control-service", "--fail2ban-timeout", "soon"]).unwrap_err();
        assert!(error.to_string().contains("--fail2ban-timeout"), "{error}");
        let error = Config::try_from_args(["control-service", "--grpc-max-in-flight", "0"]).unwrap_err();
        assert!(error.to_string().contains("--grpc-max-in-flight"), "{error}");
        let error = Config::try_from_args(["control-service", "--grpc-max-request-bytes", "64MiB"]).unwrap_err();
        assert!(error.to_string().contains("--grpc-max-request-bytes"), "{error}");
        let config = Config::try_from_args(["control-service", "--grpc-request-timeout", "0s"]).unwrap();
        assert!(config.serve_limits().unwrap_err().to_string().contains("--grpc-request-timeout"));
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--grpc-max-streaming-calls", "0"),
            ("--grpc-streaming-call-max-age", "0s"),
            ("--grpc-streaming-call-max-age", "soon"),
        ] {
            let error = Config::try_from_args(["control-service", flag, value]).unwrap_err();
            assert!(error.to_string().contains(flag), "{flag} {value}: {error}");
        }
    }
}
