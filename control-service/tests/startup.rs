//! The binary refuses bad configuration at start: a clear message naming
//! the setting or the stage, a non-zero exit, nothing served. fail2ban
//! being away is not one of those (see tests/tests/control_fail2ban.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_control-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("CONTROL_DATABASE_URL")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unreachable_postgres_names_the_database_stage_without_the_password() {
    let out = run(&["--database-url", "postgres://control:s3cret@127.0.0.1:1/control?connect_timeout=2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("startup stage `database` failed"), "{err}");
    assert!(err.contains("postgres://control:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

#[test]
fn unsupported_database_url_names_the_setting() {
    let out = run(&["--database-url", "mysql://localhost/control"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--database-url") && err.contains("sqlite://PATH or postgres://"), "{err}");
}

#[test]
fn taken_port_names_the_grpc_stage_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_control-service"))
        .args(["--listen", &addr, "--metrics-listen", "127.0.0.1:0", "--database-url", "sqlite::memory:"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("startup stage `grpc` failed") && err.contains("--listen"), "{err}");
}

#[test]
fn bad_values_are_usage_errors_naming_the_setting() {
    let out = run(&["--geo-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--geo-timeout"), "{}", stderr(&out));

    let out = run(&["--database-url", "sqlite::memory:", "--geo-endpoint", "not a url"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("startup stage `clients` failed") && err.contains("--geo-endpoint"), "{err}");
}
