//! The control-service binary: parse config, build, serve until SIGTERM.

use bangui_runtime::{ConfigExt, shutdown_signal, telemetry};
use control_service::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::from_env_and_args();
    if let Err(error) = telemetry::init(config.log_format, &config.log, "--log / CONTROL_LOG") {
        eprintln!("control-service: {error:#}");
        return std::process::ExitCode::FAILURE;
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(stage = %error.stage, error = %format!("{:#}", error.source), "startup failed");
            eprintln!("control-service: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    bangui_runtime::exit_code(app.run_until_stopped(shutdown_signal())).await
}
