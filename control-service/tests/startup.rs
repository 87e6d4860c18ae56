//! The binary refuses bad configuration at start: a clear message naming
//! the setting or the stage, a non-zero exit, nothing served. fail2ban
//! being away is not one of those (see tests/tests/control_fail2ban.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_control-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
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

#[test]
fn geo_tls_settings_with_a_plaintext_endpoint_are_refused() {
    // The CA file need not exist: the combination is refused before anything is read.
    for endpoint in ["http://127.0.0.1:50051", "HTTP://geo:50051"] {
        let out = run(&[
            "--database-url",
            "sqlite::memory:",
            "--geo-endpoint",
            endpoint,
            "--geo-tls-ca",
            "/nonexistent/ca.pem",
        ]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("--geo-endpoint") && err.contains("--geo-tls-ca") && err.contains("cleartext"), "{err}");
    }
}

/// Every database URL mistake ends before serving, names --database-url and
/// never prints the password, on stdout (the log) or stderr.
#[test]
fn database_url_errors_never_print_the_password() {
    let urls = [
        "mysql://u:SECRETPW@127.0.0.1/x",
        "postgres://u:SECRETPW@127.0.0.1:notaport/x",
        "postgres//u:SECRETPW@127.0.0.1/x",
        "postgres:u:SECRETPW@127.0.0.1/x",
        "postgres://u:SECRET@PW@[::1/x",
        "postgres://u@127.0.0.1:notaport/x?password=SECRETPW",
    ];
    for url in urls {
        let out = run(&["--database-url", url]);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!out.status.success(), "{url}: {all}");
        assert!(all.contains("--database-url"), "{url}: {all}");
        assert!(!all.contains("SECRETPW") && !all.contains("SECRET@PW"), "{url}: the password leaked: {all}");
    }
}

/// A geo-service token over plaintext is allowed (a private network, a
/// mesh) but warned about at start, without the token.
#[test]
fn a_geo_token_over_plaintext_is_warned_about_at_start() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .args(["--database-url", "sqlite::memory:"])
        .args(["--fail2ban-socket", "/nonexistent/fail2ban.sock", "--log-format", "json"])
        .args(["--geo-endpoint", "http://127.0.0.1:1", "--geo-auth-token", "TOKEN-VALUE-42"])
        .env_remove("CONTROL_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        let serving = line.contains("\"message\":\"serving\"");
        lines.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(log.contains("\"message\":\"serving\""), "it must still start: {log}");
    let warning = lines.iter().find(|l| l.contains("cleartext")).unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warning.contains("\"level\":\"WARN\"") && warning.contains("--geo-auth-token"), "{warning}");
    assert!(!log.contains("TOKEN-VALUE-42"), "the token leaked: {log}");
}
