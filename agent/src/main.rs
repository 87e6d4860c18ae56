//! The fail2ban-agent binary: enroll once, then hold the host's stream to
//! the control plane until SIGTERM.

use std::{process::ExitCode, sync::Arc};

use bangui_fail2ban::{Fail2ban, SocketClient, StartSettings};
use bangui_runtime::{ConfigExt, shutdown_signal, telemetry};
use fail2ban_agent::{
    Config, enroll,
    metrics::Metrics,
    outbox::{Outbox, sync::SyncSettings},
    session,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_env_and_args();
    if let Err(message) = config.check() {
        <Config as clap::CommandFactory>::command().error(clap::error::ErrorKind::ValueValidation, message).exit();
    }
    if let Err(error) = telemetry::init(config.log_format, &config.log, "--log / FAIL2BAN_AGENT_LOG") {
        eprintln!("fail2ban-agent: {error:#}");
        return ExitCode::FAILURE;
    }
    let stop = CancellationToken::new();
    let metrics = Metrics::new();
    let listener = match tokio::net::TcpListener::bind(config.metrics_listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("fail2ban-agent: --metrics-listen {}: {error}", config.metrics_listen);
            return ExitCode::FAILURE;
        }
    };
    let metrics_addr = listener.local_addr().map_or_else(|_| config.metrics_listen.to_string(), |a| a.to_string());
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    tokio::spawn(bangui_runtime::serve_metrics(listener, 8, render, stop.clone()));
    let signal = shutdown_signal();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping");
        on_signal.cancel();
    });
    let identity = tokio::select! {
        () = stop.cancelled() => return ExitCode::SUCCESS,
        identity = enroll::identity(&config) => match identity {
            Ok(identity) => identity,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "cannot enroll");
                eprintln!("fail2ban-agent: {error:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let socket = SocketClient::new(config.socket_settings(), Arc::new(metrics.clone()));
    // The agent starts no jail yet (StartJail arrives with the commands).
    let start =
        StartSettings { client_binary: "fail2ban-client".into(), config_dir: None, timeout: config.fail2ban_timeout };
    let fail2ban = Fail2ban::new(socket, start).with_database(config.fail2ban_db.clone());
    let outbox = match Outbox::open(&config.state_dir, metrics.clone()).await {
        Ok(outbox) => outbox,
        Err(error) => {
            tracing::error!(%error, "cannot open the outbox");
            eprintln!("fail2ban-agent: cannot open the outbox in {}: {error}", config.state_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let sync = SyncSettings { interval: config.history_interval, backfill: config.history_backfill };
    tokio::spawn(fail2ban_agent::outbox::sync::run(outbox.clone(), fail2ban.clone(), sync, stop.clone()));
    tracing::info!(host_id = %identity.host_id, host_name = %identity.host_name, metrics = %metrics_addr, "fail2ban-agent running");
    match session::run(&config, &identity, &fail2ban, &outbox, &metrics, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(end) => {
            tracing::error!(error = %end, "stopped");
            eprintln!("fail2ban-agent: {end}");
            ExitCode::FAILURE
        }
    }
}
