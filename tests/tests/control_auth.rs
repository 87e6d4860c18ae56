//! The control-service's master password and sessions, through the real
//! binary: every RPC but three needs a session (enumerated by reflection,
//! so a new RPC cannot slip through), sessions and throttling hold across
//! two processes sharing one PostgreSQL, the bootstrap hash from the
//! environment, and session expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use bangui_e2e::{CONTROL_PASSWORD, ControlService, PgSchema, grpcurl, grpcurl_json};
use bangui_proto::control::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

const OPEN: [&str; 3] = [
    "bangui.control.v1.AuthService.GetSetupStatus",
    "bangui.control.v1.AuthService.Setup",
    "bangui.control.v1.AuthService.Login",
];

fn no_fail2ban(dir: &tempfile::TempDir) -> String {
    dir.path().join("none.sock").display().to_string()
}

/// Every `bangui.*` method the server lists by reflection.
fn methods(addr: &str) -> Vec<String> {
    let out = grpcurl(&["-plaintext", addr, "list"]);
    let services: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("bangui.")).map(str::to_owned).collect();
    assert!(services.len() >= 3, "{services:?}");
    let mut methods = Vec::new();
    for service in services {
        let out = grpcurl(&["-plaintext", addr, "list", &service]);
        methods.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
    }
    methods
}

/// grpcurl's error output for `method` called with `{}` and `headers`.
fn call(addr: &str, method: &str, headers: &[&str]) -> String {
    let (service, name) = method.rsplit_once('.').unwrap();
    let path = format!("{service}/{name}");
    let mut args = vec!["-plaintext"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend(["-d", "{}", addr, &path]);
    let out = grpcurl(&args);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn every_rpc_but_setup_and_login_needs_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir)]);
    let addr = control.grpc_addr.to_string();
    let methods = methods(&addr);
    assert!(methods.len() >= 20, "{methods:?}");
    let token = control.token().await;
    let good = format!("authorization: Bearer {token}");
    for method in &methods {
        if OPEN.contains(&method.as_str()) {
            continue;
        }
        for headers in [vec![], vec!["authorization: Bearer not-a-token"], vec!["authorization: Basic abc"]] {
            let out = call(&addr, method, &headers);
            assert!(out.contains("Code: Unauthenticated"), "{method} with {headers:?} got through:\n{out}");
        }
        if method.ends_with(".Logout") {
            continue; // it would end the session the other calls use
        }
        let out = call(&addr, method, &[&good]);
        assert!(!out.contains("Unauthenticated"), "{method} refused a valid session:\n{out}");
    }
    // The open ones answer without a token.
    let status = grpcurl_json(&["-plaintext", &addr, "bangui.control.v1.AuthService/GetSetupStatus"]);
    assert_eq!(status["passwordSet"], true);
    // Health and reflection stay open.
    let health = grpcurl_json(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test]
async fn sessions_and_throttling_hold_across_replicas_sharing_postgres() {
    let schema = PgSchema::create("control_replicas").await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let args = ["--database-url", url.as_str(), "--fail2ban-socket", socket.as_str(), "--login-max-failures", "3"];
    let a = ControlService::start(&args);
    let b = ControlService::start(&args);

    // Both replicas show the one setup token (the database holds it); B's
    // file works on A. B then refuses, and drops its stale token file.
    let (a_token, b_token) = (a.setup_token(), b.setup_token());
    assert_eq!(a_token, b_token);
    let setup = |setup_token: String| pb::SetupRequest { password: CONTROL_PASSWORD.into(), setup_token };
    a.auth().await.setup(setup(b_token.clone())).await.unwrap();
    assert!(!a.setup_token_file().exists(), "the token file goes with the setup");
    let token = a.token().await;
    let err = b.auth().await.setup(setup(b_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = a.auth().await.setup(setup(a_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a token ends with the setup");
    let status = b.auth().await.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap().into_inner();
    assert!(status.password_set && !status.setup_pending);
    assert!(!b.setup_token_file().exists(), "B drops its stale token file when it sees the password");
    let mut on_b = b.auth_with(&token).await;
    let got = on_b.get_session(pb::GetSessionRequest {}).await.unwrap().into_inner();
    assert_eq!(got.client, "127.0.0.1");
    // Logout on B ends it on A at once.
    on_b.logout(pb::LogoutRequest {}).await.unwrap();
    let mut on_a = a.auth_with(&token).await;
    assert_eq!(on_a.get_session(pb::GetSessionRequest {}).await.unwrap_err().code(), Code::Unauthenticated);

    // Three failures spread over both: the next attempt, anywhere, is refused.
    let wrong = || pb::LoginRequest { password: "not the password".into() };
    assert_eq!(a.auth().await.login(wrong()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(b.auth().await.login(wrong()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(a.auth().await.login(wrong()).await.unwrap_err().code(), Code::Unauthenticated);
    for replica in [&a, &b] {
        let err = replica.auth().await.login(pb::LoginRequest { password: CONTROL_PASSWORD.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        let retry = err.get_details_retry_info().expect("a RetryInfo detail").retry_delay.unwrap();
        assert!(retry > Duration::from_secs(800) && retry <= Duration::from_secs(900), "{retry:?}");
    }
    // Failed and successful logins are logged, the password never.
    let logs = a.logs().join("\n");
    assert!(logs.contains("login failed") && logs.contains("login succeeded") && logs.contains("login throttled"));
    assert!(!logs.contains(CONTROL_PASSWORD) && !logs.contains("not the password") && !logs.contains(&token));
}

#[tokio::test]
async fn bootstrap_hash_from_the_environment() {
    let mut child = Command::new(bangui_e2e::binary("control-service"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a password from a Secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$") && !phc.contains("Secret"), "{phc}");

    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir), "--admin-password-hash", &phc]);
    let mut auth = control.auth().await;
    let status = auth.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap().into_inner();
    assert!(status.password_set && status.managed_by_config);
    let err = auth
        .setup(pb::SetupRequest { password: "a takeover attempt".into(), setup_token: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(!status.setup_pending);
    assert!(!control.setup_token_file().exists(), "no setup token with --admin-password-hash");
    let login =
        auth.login(pb::LoginRequest { password: "a password from a Secret".into() }).await.unwrap().into_inner();
    let mut authed = control.auth_with(&login.token).await;
    let err = authed
        .change_password(pb::ChangePasswordRequest {
            old_password: "a password from a Secret".into(),
            new_password: "something else entirely".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "managed by the Secret: {err:?}");

    // A value that is not an argon2id PHC string stops the start, naming the setting.
    let out = Command::new(bangui_e2e::binary("control-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--admin-password-hash", "hunter2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-password-hash"));
}

#[tokio::test]
async fn a_session_ends_when_it_expires_and_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir)]);
    let mut settings = control.settings().await;
    let defaults = settings.get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner().settings.unwrap();
    assert_eq!(defaults.session_duration.unwrap().seconds, 3600);
    assert_eq!(defaults.schedules.unwrap().session_cleanup, "0 0 * * * *");

    let bad =
        pb::UpdateSettingsRequest { geo_re_resolve_schedule: Some("every ten minutes".into()), ..Default::default() };
    let err = settings.update_settings(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.get_details_bad_request().unwrap().field_violations[0].field, "geo_re_resolve_schedule");

    let short = pb::UpdateSettingsRequest {
        session_duration: Some(bangui_proto::prost_types::Duration { seconds: 3, nanos: 0 }),
        ..Default::default()
    };
    let updated = settings.update_settings(short).await.unwrap().into_inner().settings.unwrap();
    assert_eq!(updated.session_duration.unwrap().seconds, 3);

    let login = control.auth().await.login(pb::LoginRequest { password: CONTROL_PASSWORD.into() }).await.unwrap();
    let token = login.into_inner().token;
    let mut auth = control.auth_with(&token).await;
    // Expiry is kept in whole seconds (now + 3 s, now rounded down), so the
    // session lives at least 2 s: enough for one call on a loaded machine.
    assert!(auth.get_session(pb::GetSessionRequest {}).await.is_ok());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let err = auth.get_session(pb::GetSessionRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}
