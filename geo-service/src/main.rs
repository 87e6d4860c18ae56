//! The geo-service binary: parse config, build, serve until SIGTERM.

use bangui_runtime::{ConfigExt, shutdown_signal, telemetry};
use geo_service::{Application, Config};

/// mimalloc: a lookup batch allocates many small strings on the blocking
/// pool and frees them on a runtime thread, which glibc malloc handles
/// poorly (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::from_env_and_args();
    if let Err(message) = config.check() {
        // Exit 2 with clap's usage error, as for any other bad flag.
        <Config as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    if let Err(error) = telemetry::init(config.log_format, &config.log, "--log / GEO_LOG") {
        eprintln!("geo-service: {error:#}");
        return std::process::ExitCode::FAILURE;
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(stage = %error.stage, error = %format!("{:#}", error.source), "startup failed");
            eprintln!("geo-service: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    bangui_runtime::exit_code(app.run_until_stopped(shutdown_signal())).await
}
