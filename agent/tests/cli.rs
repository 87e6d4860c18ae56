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
