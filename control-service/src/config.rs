//! One typed configuration: defaults, then `CONTROL_*` environment
//! variables, then command-line flags, validated before anything starts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bangui_runtime::LogFormat;
use clap::Parser;

use crate::fail2ban::{SocketSettings, StartSettings};

/// The control-service configuration (bootstrap settings; runtime settings
/// live in the control database).
#[derive(Debug, Clone, Parser)]
#[command(name = "control-service", version, about = "BanGUI control-service: fail2ban, history, auth and jobs")]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "CONTROL_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// Address the Prometheus metrics endpoint (`/metrics`) listens on.
    #[arg(long, env = "CONTROL_METRICS_LISTEN", default_value = "0.0.0.0:9465")]
    pub metrics_listen: SocketAddr,

    /// The control database: `sqlite://PATH` (created if missing; one
    /// replica) or `postgres://USER:PASSWORD@HOST/DB` (several replicas).
    #[arg(long, env = "CONTROL_DATABASE_URL", default_value = "sqlite://control.db", hide_env_values = true)]
    pub database_url: String,

    /// fail2ban's control socket (`socket` in fail2ban.conf).
    #[arg(long, env = "CONTROL_FAIL2BAN_SOCKET", default_value = "/var/run/fail2ban/fail2ban.sock")]
    pub fail2ban_socket: PathBuf,

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

    /// The fail2ban-client binary StartJail runs.
    #[arg(long, env = "CONTROL_FAIL2BAN_CLIENT", default_value = "fail2ban-client")]
    pub fail2ban_client: PathBuf,

    /// The geo-service, e.g. `http://geo-service:50051`. Without it active
    /// bans come back without countries.
    #[arg(long, env = "CONTROL_GEO_ENDPOINT")]
    pub geo_endpoint: Option<String>,

    /// Deadline for one geo-service call.
    #[arg(long, env = "CONTROL_GEO_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub geo_timeout: Duration,

    /// How often fail2ban, the geo-service and the database are probed for
    /// the per-dependency health statuses.
    #[arg(long, env = "CONTROL_PROBE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// Log format.
    #[arg(long, env = "CONTROL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info`,
    /// `control_service=debug`).
    #[arg(long, env = "CONTROL_LOG", default_value = "info")]
    pub log: String,

    /// How long in-flight RPCs may take to finish after SIGTERM.
    #[arg(long, env = "CONTROL_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The database URL without its password, for logs.
    pub fn database_url_redacted(&self) -> String {
        bangui_runtime::redact_url(&self.database_url)
    }

    pub fn socket_settings(&self) -> SocketSettings {
        SocketSettings {
            path: self.fail2ban_socket.clone(),
            connect_timeout: self.fail2ban_connect_timeout,
            reply_timeout: self.fail2ban_timeout,
            max_in_flight: usize::from(self.fail2ban_max_in_flight),
        }
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
    }

    #[test]
    fn bad_values_name_the_setting() {
        let error = Config::try_from_args(["control-service", "--fail2ban-max-in-flight", "0"]).unwrap_err();
        assert!(error.to_string().contains("--fail2ban-max-in-flight"), "{error}");
        let error = Config::try_from_args(["control-service", "--fail2ban-timeout", "soon"]).unwrap_err();
        assert!(error.to_string().contains("--fail2ban-timeout"), "{error}");
    }
}
