//! The binary's refusals before it reaches anything: a bad endpoint is a
//! usage error (exit 2), a host with no identity and no token says what to
//! give (exit 1), and a damaged identity file is never replaced by a new
//! host. (Also makes `cargo nextest run --workspace` build the binary the
//! end-to-end tests start.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn agent(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fail2ban-agent"))
        .arg("--state-dir")
        .arg(state)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("FAIL2BAN_AGENT_ENROLL_TOKEN")
        .env_remove("FAIL2BAN_AGENT_CONTROL_ENDPOINT")
        .output()
        .unwrap()
}

#[test]
fn an_endpoint_that_is_not_a_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path(), &["--control-endpoint", "control:50053"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://HOST:PORT"));
}

#[test]
fn no_identity_and_no_token_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path(), &["--control-endpoint", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--enroll-token-file"), "{out:?}");
}

#[test]
fn a_damaged_identity_is_an_error_not_a_new_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.json"), "{").unwrap();
    let out = agent(dir.path(), &["--control-endpoint", "http://127.0.0.1:1", "--enroll-token", "t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("identity.json"), "{out:?}");
    // Nothing was enrolled in its place.
    assert!(!dir.path().join("host-id").exists());
}

#[test]
fn sigterm_while_connecting_ends_the_agent_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let identity = r#"{"host_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "host_name": "h", "credential": "c"}"#;
    std::fs::write(dir.path().join("identity.json"), identity).unwrap();
    // Accepts and never answers: the agent waits in its connect/HTTP/2 handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fail2ban-agent"))
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--metrics-listen", "127.0.0.1:0", "--control-endpoint", &endpoint, "--connect-timeout", "30s"])
        .args(["--fail2ban-socket", "/nonexistent/fail2ban.sock"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _held = silent.accept().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let asked = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(asked.elapsed() < std::time::Duration::from_secs(3), "still running 3 s after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
