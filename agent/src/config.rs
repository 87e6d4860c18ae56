//! The agent's flags (each also an environment variable).

use std::{path::PathBuf, time::Duration};

use bangui_fail2ban::SocketSettings;
use bangui_runtime::LogFormat;

/// fail2ban-agent: holds this host's stream to the BanGUI control plane.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fail2ban-agent", version)]
pub struct Config {
    /// The control plane's agent port, one or more (comma-separated), e.g.
    /// `https://bangui-agents.example.org:50053`. Tried in turn; a name is
    /// resolved again on every connect, so one DNS name for every replica
    /// is enough.
    #[arg(long, env = "FAIL2BAN_AGENT_CONTROL_ENDPOINT", value_delimiter = ',', required = true)]
    pub control_endpoint: Vec<String>,

    /// Where the host's identity is kept (made 0700).
    #[arg(long, env = "FAIL2BAN_AGENT_STATE_DIR", default_value = "/var/lib/fail2ban-agent")]
    pub state_dir: PathBuf,

    /// A file holding the one-time enrollment token (CreateEnrollmentToken),
    /// read only while the host has no identity yet.
    #[arg(long, env = "FAIL2BAN_AGENT_ENROLL_TOKEN_FILE")]
    pub enroll_token_file: Option<PathBuf>,

    /// The enrollment token itself (prefer the file: a flag shows in `ps`).
    #[arg(long, env = "FAIL2BAN_AGENT_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll_token: Option<String>,

    /// The name to enroll the host by (default: its hostname).
    #[arg(long, env = "FAIL2BAN_AGENT_HOST_NAME")]
    pub host_name: Option<String>,

    /// fail2ban's control socket.
    #[arg(long, env = "FAIL2BAN_AGENT_FAIL2BAN_SOCKET", default_value = "/var/run/fail2ban/fail2ban.sock")]
    pub fail2ban_socket: PathBuf,

    /// fail2ban's database file, read for the host's ban history (default:
    /// the file fail2ban names, `get dbfile`).
    #[arg(long, env = "FAIL2BAN_AGENT_FAIL2BAN_DB")]
    pub fail2ban_db: Option<PathBuf>,

    /// How often fail2ban's database is read into the outbox.
    #[arg(long, env = "FAIL2BAN_AGENT_HISTORY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub history_interval: Duration,

    /// How far back the first read of fail2ban's database goes.
    #[arg(long, env = "FAIL2BAN_AGENT_HISTORY_BACKFILL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub history_backfill: Duration,

    /// Deadline for one fail2ban command.
    #[arg(long, env = "FAIL2BAN_AGENT_FAIL2BAN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub fail2ban_timeout: Duration,

    /// The CA (PEM) that signed the control plane's certificate, for
    /// `https://` endpoints (default: the system's roots are not used; give
    /// the CA).
    #[arg(long, env = "FAIL2BAN_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// The name the control plane's certificate is checked against, when it
    /// differs from the endpoint's host.
    #[arg(long, env = "FAIL2BAN_AGENT_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// mTLS: the agent's client certificate (PEM), for a control plane
    /// that asks for one (`--tls-client-ca` there).
    #[arg(long, env = "FAIL2BAN_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "FAIL2BAN_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Deadline for reaching an endpoint (TCP and TLS).
    #[arg(long, env = "FAIL2BAN_AGENT_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// The longest wait between two attempts to reach the control plane
    /// (waits are random up to a ceiling that doubles from 100 ms).
    #[arg(long, env = "FAIL2BAN_AGENT_RECONNECT_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconnect_max: Duration,

    /// Where `/metrics` is served (Prometheus text). Loopback by default:
    /// nothing off the host reaches the agent unless you say so.
    #[arg(long, env = "FAIL2BAN_AGENT_METRICS_LISTEN", default_value = "127.0.0.1:9466")]
    pub metrics_listen: std::net::SocketAddr,

    /// Log format.
    #[arg(long, env = "FAIL2BAN_AGENT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "FAIL2BAN_AGENT_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// How the agent reaches the local fail2ban.
    pub fn socket_settings(&self) -> SocketSettings {
        SocketSettings {
            path: self.fail2ban_socket.clone(),
            connect_timeout: Duration::from_secs(2),
            reply_timeout: self.fail2ban_timeout,
            max_in_flight: 2,
        }
    }

    /// Checks what clap cannot: the endpoints' form.
    pub fn check(&self) -> Result<(), String> {
        for endpoint in &self.control_endpoint {
            let uri: tonic::transport::Uri =
                endpoint.parse().map_err(|e| format!("--control-endpoint {endpoint:?}: {e}"))?;
            match uri.scheme_str() {
                Some("http" | "https") if uri.host().is_some() => {}
                _ => {
                    return Err(format!("--control-endpoint {endpoint:?}: give http://HOST:PORT or https://HOST:PORT"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bangui_runtime::ConfigExt;

    use super::*;

    #[test]
    fn endpoints_are_a_list_of_urls() {
        let config = Config::try_from_args(["fail2ban-agent", "--control-endpoint", "http://a:1,https://b:2"]).unwrap();
        assert_eq!(config.control_endpoint, ["http://a:1", "https://b:2"]);
        assert!(config.check().is_ok());
        let bad = Config::try_from_args(["fail2ban-agent", "--control-endpoint", "a:1"]).unwrap();
        assert!(bad.check().unwrap_err().contains("a:1"));
    }
}
