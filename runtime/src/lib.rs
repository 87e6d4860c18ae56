//! What both BanGUI services run the same way.
//!
//! * [`telemetry`]: the `tracing` subscriber (JSON in production, text for people).
//! * [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.
//! * [`serve_metrics`]: the Prometheus `/metrics` endpoint.
//! * [`StartupError`]: a failed startup stage, named.
//! * [`InvalidArgument`]: a bad request field, and why.
//! * [`grpc`]: serving with health, reflection and a SIGTERM drain.
//! * [`limits`]: caps on connections per listener and on open streaming calls.
//! * [`db`]: SQLite and PostgreSQL pools, and the stores' error type.
//! * [`sql`]: statements written once for both backends ([`sql::Stmt`], [`sql::SqlBackend`]).
//! * [`reserved`]: the reserved address ranges (not public addresses).
//! * [`guard`]: gates (bearer token, sessions) wrapped around a gRPC service.
//! * [`ConfigExt`]: parsing a service's clap configuration.

pub mod db;
pub mod grpc;
pub mod guard;
pub mod limits;
pub mod reserved;
pub mod sql;
pub mod telemetry;

use std::future::Future;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use telemetry::LogFormat;

/// A bad argument: which request field, and why (INVALID_ARGUMENT with a
/// BadRequest detail naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidArgument {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidArgument {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A startup failure: which stage, and why. `S` is the service's own stage
/// enum; its `Display` is the name printed in the error.
#[derive(Debug, thiserror::Error)]
#[error("startup stage `{stage}` failed: {source:#}")]
pub struct StartupError<S: std::fmt::Display + std::fmt::Debug> {
    pub stage: S,
    #[source]
    pub source: anyhow::Error,
}

/// `result.stage(Stage::X)?` names the stage a failure belongs to.
pub trait StageContext<T, S: std::fmt::Display + std::fmt::Debug> {
    fn stage(self, stage: S) -> Result<T, StartupError<S>>;
}

impl<T, E: Into<anyhow::Error>, S: std::fmt::Display + std::fmt::Debug> StageContext<T, S> for Result<T, E> {
    fn stage(self, stage: S) -> Result<T, StartupError<S>> {
        self.map_err(|e| StartupError { stage, source: e.into() })
    }
}

/// Serves `GET /metrics` with what `render` returns (Prometheus text
/// format) until `stop` is cancelled, with at most `max_connections` open
/// at once (see [`limits`]).
pub async fn serve_metrics<F>(listener: TcpListener, max_connections: usize, render: F, stop: CancellationToken)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render()) }
        }),
    );
    let listener = limits::LimitedListener::new(listener, max_connections.max(1), "metrics");
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(%error, "metrics endpoint failed");
    }
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when
/// this is called, not when the future is first polled: a SIGTERM that
/// arrives between the "serving" log line and the first poll (a fast
/// orchestrator, a test) is then a graceful shutdown, not the default
/// action that kills the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = terminate => {},
        }
    }
}

/// Parsing for a service's clap configuration.
pub trait ConfigExt: clap::Parser {
    /// Flags and environment; exits with a message naming the setting on error.
    fn from_env_and_args() -> Self {
        Self::parse()
    }

    /// An explicit argument list (and the environment), for tests.
    fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }
}

impl<C: clap::Parser> ConfigExt for C {}

/// `url` with its password replaced by `***`, for logs and errors. Built
/// for malformed URLs too (a missing `//`, a password holding `@` or `/`,
/// a `password=` query parameter): whatever could be a password is cut,
/// even if that cuts more than the password.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The host starts after the last `@`: a password may hold `@` itself.
    let (userinfo, tail) = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => (Some(userinfo), tail),
        None => (None, rest),
    };
    let userinfo = match userinfo {
        None => String::new(),
        Some(info) => match info.split_once(':') {
            Some((user, _)) if !user.contains(['@', '/']) => format!("{user}:***@"),
            Some(_) => "***@".to_owned(),
            // `user@host`: no password, unless the `@` shows it is malformed.
            None if info.contains('@') => "***@".to_owned(),
            None => format!("{info}@"),
        },
    };
    format!("{scheme}{userinfo}{}", redact_query(tail))
}

/// `password=…` (and `sslpassword=…`) query values replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else { return tail.to_owned() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("pass") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// Runs `main_body` and turns its outcome into the process exit code, so
/// both binaries' `main` stay a few lines.
pub async fn exit_code<F>(main_body: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    match main_body.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(super::redact_url("postgres://geo:s3cret@db:5432/geo"), "postgres://geo:***@db:5432/geo");
        assert_eq!(super::redact_url("sqlite://geo.db"), "sqlite://geo.db");
        assert_eq!(super::redact_url("postgres://geo@db/geo"), "postgres://geo@db/geo");
        assert_eq!(super::redact_url("mysql://u:SECRETPW@127.0.0.1/x"), "mysql://u:***@127.0.0.1/x");
    }

    #[test]
    fn malformed_urls_lose_their_password_too() {
        let cases = [
            "postgres//u:SECRETPW@127.0.0.1/x",
            "postgres:u:SECRETPW@127.0.0.1/x",
            "postgres://u:SECRET@PW@127.0.0.1/x",
            "postgres://u:SECRET/PW@127.0.0.1/x",
            "postgres://u@SECRETPW@127.0.0.1/x",
            "postgres://u:SECRETPW@127.0.0.1:notaport/x",
            "postgres://u@127.0.0.1/x?password=SECRETPW&sslmode=disable",
            "postgres://u@127.0.0.1/x?sslmode=disable&sslpassword=SECRETPW",
            "postgres://u:SECRETPW@[::1/x",
        ];
        for url in cases {
            let redacted = super::redact_url(url);
            for piece in ["SECRETPW", "SECRET", "PW@"] {
                assert!(!redacted.contains(piece), "{url} -> {redacted}");
            }
            assert!(redacted.contains("127.0.0.1") || redacted.contains("[::1"), "{url} -> {redacted}");
        }
    }
}
