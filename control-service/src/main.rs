//! The control-service binary: parse config, build, serve until SIGTERM.

use bangui_runtime::{ConfigExt, shutdown_signal, telemetry};
use control_service::{Application, Config, auth::password, config::Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::from_env_and_args();
    if let Some(Command::HashPassword) = config.command {
        return hash_password();
    }
    if let Err(message) = config.check() {
        // Exit 2 with clap's usage error, as for any other bad flag.
        <Config as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
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

/// `control-service hash-password`: one line from standard input (never
/// the command line, where `ps` would show it) to an argon2id PHC string.
fn hash_password() -> std::process::ExitCode {
    let mut line = String::new();
    if let Err(error) = std::io::stdin().read_line(&mut line) {
        eprintln!("control-service: cannot read the password from standard input: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if let Err(error) = password::check_new("password", password) {
        eprintln!("control-service: {error}");
        return std::process::ExitCode::from(2);
    }
    match password::hash(password) {
        Ok(phc) => {
            println!("{phc}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("control-service: hashing failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
