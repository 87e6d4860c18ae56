//! Login abuse against the real control-service binary: bursts and floods
//! of wrong passwords from distinct client addresses (client sockets bound
//! to 127.0.0.x), counted from `/metrics`, with the process's peak RSS
//! (VmHWM); the one-time setup token; ChangePassword under the same limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{Bearer, CONTROL_PASSWORD, ControlService};
use bangui_proto::control::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

const WRONG: &str = "not the password at all";

fn no_fail2ban(dir: &tempfile::TempDir) -> String {
    dir.path().join("none.sock").display().to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The sum of the samples whose line starts with `prefix`.
async fn metric_sum(control: &ControlService, prefix: &str) -> f64 {
    let text = control.metrics_text().await;
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

const LOGIN_MISMATCHES: &str = r#"control_password_checks_total{purpose="login",outcome="mismatch"}"#;

async fn login(channel: Channel, password: &str) -> Result<String, tonic::Status> {
    let mut auth = AuthServiceClient::new(channel);
    Ok(auth.login(pb::LoginRequest { password: password.into() }).await?.into_inner().token)
}

/// Logs in with the right password from `from`, retrying while the service
/// says RESOURCE_EXHAUSTED (as a client honouring RetryInfo would); the
/// time it took.
async fn clean_login(control: &ControlService, from: &str) -> Duration {
    let started = Instant::now();
    let channel = control.channel_from(ip(from)).await;
    loop {
        match login(channel.clone(), CONTROL_PASSWORD).await {
            Ok(_) => return started.elapsed(),
            Err(status) if status.code() == Code::ResourceExhausted => {
                let retry = status.get_details_retry_info().and_then(|r| r.retry_delay).expect("a RetryInfo");
                assert!(retry <= Duration::from_secs(2), "{from} must not be locked out: {status:?}");
                tokio::time::sleep(retry).await;
            }
            Err(status) => panic!("{from}: {status:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{from} could not log in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_wrong_logins_from_one_address_check_five_and_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir)]);
    control.token().await;
    let hwm_before = control.peak_rss_kib();

    // 200 at once on one connection from 127.0.0.2.
    let channel = control.channel_from(ip("127.0.0.2")).await;
    let calls: Vec<_> = (0..200).map(|_| tokio::spawn(login(channel.clone(), WRONG))).collect();
    let (mut wrong, mut refused) = (0, 0);
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unauthenticated => wrong += 1,
            Code::ResourceExhausted => {
                assert!(status.get_details_retry_info().is_some(), "{status:?}");
                refused += 1;
            }
            _ => panic!("{status:?}"),
        }
    }
    let checked = metric_sum(&control, LOGIN_MISMATCHES).await;
    eprintln!("200 wrong logins from 127.0.0.2: {wrong} checked and wrong, {refused} refused; metric {checked}");
    assert!(wrong <= 5, "{wrong} guesses checked");
    assert_eq!(checked, f64::from(wrong), "the metric counts the checks");
    assert!(metric_sum(&control, "control_login_limited_total").await >= f64::from(refused));

    // Another address logs in at once; 127.0.0.2 is refused even with the
    // right password, and told how long to wait.
    let took = clean_login(&control, "127.0.0.3").await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let status = login(control.channel_from(ip("127.0.0.2")).await, CONTROL_PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(800) && retry <= Duration::from_secs(900), "{retry:?}");
    assert_eq!(metric_sum(&control, LOGIN_MISMATCHES).await, checked, "no check for a throttled address");

    let hwm = control.peak_rss_kib();
    eprintln!("VmHWM: {hwm_before} KiB before the burst, {hwm} KiB after");
    assert!(hwm < 128 * 1024, "peak RSS {hwm} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_from_many_addresses_slows_logins_but_locks_nobody_out() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &no_fail2ban(&dir),
        "--login-max-failures-global",
        "10",
        "--login-slowdown-max",
        "2s",
    ]);
    control.token().await;

    // 127.0.0.2..9, four callers each, wrong passwords until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for host in 2..=9 {
        let channel = control.channel_from(ip(&format!("127.0.0.{host}"))).await;
        for _ in 0..4 {
            let (channel, stop, sent) = (channel.clone(), stop.clone(), sent.clone());
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = login(channel.clone(), WRONG).await.unwrap_err();
                    assert!(matches!(status.code(), Code::Unauthenticated | Code::ResourceExhausted), "{status:?}");
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    // Until the flood has used up its guesses and slows everyone down.
    bangui_e2e::eventually(60, "40 wrong guesses checked", || async {
        metric_sum(&control, LOGIN_MISMATCHES).await >= 40.0
    })
    .await;
    let took = clean_login(&control, "127.0.0.20").await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let checked = metric_sum(&control, LOGIN_MISMATCHES).await;
    eprintln!(
        "flood of {} wrong logins from 8 addresses: {checked} checked; the clean client logged in in {took:?}",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(checked, 40.0, "5 per address");
    assert!(took >= Duration::from_secs(1), "the slowdown applies to everyone: {took:?}");
    assert!(took < Duration::from_secs(8), "a few seconds at most: {took:?}");
    let logs = control.logs().join("\n");
    assert!(logs.contains("login slowed down"), "the slowdown is logged");
}

#[tokio::test]
async fn setup_needs_the_one_time_token_from_the_file_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir)]);
    let mut auth = control.auth().await;
    let pending = pb::GetSetupStatusResponse { password_set: false, managed_by_config: false, setup_pending: true };
    assert_eq!(auth.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap().into_inner(), pending);

    // The file: beside the database, the owner's only, named in the log
    // (the token never is).
    let file = control.setup_token_file().to_owned();
    assert_eq!(file.parent(), control.data_dir());
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = control.setup_token();
    assert_eq!(token.len(), 43, "256 bits in base64url");
    let logs = control.logs().join("\n");
    assert!(logs.contains(&file.display().to_string()), "the log names the file");
    assert!(!logs.contains(&token), "the token is never logged");

    let setup =
        |setup_token: &str| pb::SetupRequest { password: CONTROL_PASSWORD.into(), setup_token: setup_token.into() };
    for bad in ["", "wrong-token", &token[..42]] {
        let status = auth.setup(setup(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{bad:?}: {status:?}");
    }
    assert_eq!(auth.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap().into_inner(), pending);
    let status = auth.login(pb::LoginRequest { password: CONTROL_PASSWORD.into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "nothing stored: {status:?}");

    auth.setup(setup(&token)).await.unwrap();
    assert!(!file.exists(), "the file goes with the setup");
    let status = auth.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap().into_inner();
    assert!(status.password_set && !status.setup_pending);
    let again = pb::SetupRequest { password: "a takeover password".into(), setup_token: token.clone() };
    assert_eq!(auth.setup(again).await.unwrap_err().code(), Code::FailedPrecondition, "the token no longer works");
    assert!(auth.login(pb::LoginRequest { password: CONTROL_PASSWORD.into() }).await.is_ok());
    assert!(!control.logs().join("\n").contains(CONTROL_PASSWORD));
}

#[tokio::test]
async fn a_restart_while_setup_is_pending_leaves_a_usable_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("control.db").display());
    let file = dir.path().join("setup-token");
    let socket = no_fail2ban(&dir);
    let file_arg = file.display().to_string();
    let args = ["--fail2ban-socket", &socket, "--database-url", &db, "--setup-token-file", &file_arg];

    let first = ControlService::start(&args);
    let token = first.setup_token();
    first.shutdown().await;
    // The file survives a restart: the same token, never printed.
    let second = ControlService::start(&args);
    assert_eq!(second.setup_token(), token);
    assert!(!second.logs().join("\n").contains(&token));
    second.shutdown().await;
    // The file is lost (e.g. an emptyDir): the next start writes the same
    // token again (the database keeps it until it is used or expires).
    std::fs::remove_file(&file).unwrap();
    let third = ControlService::start(&args);
    assert_eq!(third.setup_token(), token);
    let mut auth = third.auth().await;
    auth.setup(pb::SetupRequest { password: CONTROL_PASSWORD.into(), setup_token: token }).await.unwrap();
    assert!(!file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_old_passwords_in_change_password_are_throttled_like_logins() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir), "--login-max-failures", "3"]);
    let token = control.token().await;
    let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
    let from = |host: &'static str| {
        let bearer = bearer.clone();
        let control = &control;
        async move { AuthServiceClient::with_interceptor(control.channel_from(ip(host)).await, bearer) }
    };
    let change =
        |old: &str| pb::ChangePasswordRequest { old_password: old.into(), new_password: "a brand new password".into() };

    // 20 at once from 127.0.0.5: at most 3 checked.
    let client = from("127.0.0.5").await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            let request = change(WRONG);
            tokio::spawn(async move { client.change_password(request).await.unwrap_err() })
        })
        .collect();
    let mut wrong = 0;
    for call in calls {
        let status = call.await.unwrap();
        match status.code() {
            Code::Unauthenticated => wrong += 1,
            Code::ResourceExhausted => assert!(status.get_details_retry_info().is_some()),
            _ => panic!("{status:?}"),
        }
    }
    let checked =
        metric_sum(&control, r#"control_password_checks_total{purpose="change_password",outcome="mismatch"}"#).await;
    assert_eq!(checked, f64::from(wrong));
    assert!(wrong <= 3, "{wrong} old passwords checked");
    // Even the right old password is refused now, and so is a login from there.
    let status = from("127.0.0.5").await.change_password(change(CONTROL_PASSWORD)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = login(control.channel_from(ip("127.0.0.5")).await, CONTROL_PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // From elsewhere the same session changes it.
    from("127.0.0.6").await.change_password(change(CONTROL_PASSWORD)).await.unwrap();
}
