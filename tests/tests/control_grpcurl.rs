//! control-service through the real `grpcurl`, as the README's tour shows
//! it: every JailService RPC, against a real fail2ban-server. The test
//! lists the service's methods by reflection and fails when one of them was
//! not called, so a new RPC cannot go without a grpcurl example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bangui_e2e::{ControlService, fail2ban::Fail2banServer, grpcurl, grpcurl_error_details, grpcurl_json};

const SERVICE: &str = "bangui.control.v1.JailService";

#[tokio::test]
async fn every_jail_rpc_through_grpcurl() {
    let f2b = Fail2banServer::start();
    let config = f2b.config_dir().display().to_string();
    let control = ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--fail2ban-config-dir", &config]);
    let addr = control.grpc_addr.to_string();
    let bearer = format!("authorization: Bearer {}", control.token().await);

    let listed = grpcurl(&["-plaintext", &addr, "list", SERVICE]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let methods: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{SERVICE}.")).map(str::to_owned))
        .collect();
    let mut called = BTreeSet::new();
    let mut call = |method: &str, body: &str| {
        called.insert(method.to_owned());
        grpcurl_json(&["-plaintext", "-H", &bearer, "-d", body, &addr, &format!("{SERVICE}/{method}")])
    };

    let status = call("GetServerStatus", "{}");
    assert_eq!((status["online"].as_bool(), status["jailCount"].as_u64()), (Some(true), Some(2)));
    let jails = call("ListJails", "{}");
    assert_eq!(jails["jails"][0]["name"], "alpha");

    let ban = call("BanIp", r#"{"jail": "alpha", "ip": "192.0.2.10"}"#);
    assert_eq!(ban["newlyBanned"], true);
    let jail = call("GetJail", r#"{"jail": "alpha"}"#);
    assert_eq!(jail["bans"][0]["ip"], "192.0.2.10");
    assert_eq!(jail["bantimeSeconds"], "3600", "int64 is a JSON string");
    let active = call("ListActiveBans", "{}");
    assert_eq!(active["bans"][0]["jail"], "alpha");
    let unban = call("UnbanIp", r#"{"ip": "192.0.2.10"}"#);
    assert_eq!(unban["unbanned"], 1);

    let idle = call("SetJailIdle", r#"{"jail": "beta", "idle": true}"#);
    assert_eq!(idle["idle"], true);
    let params = call("SetJailParams", r#"{"jail": "beta", "bantimeSeconds": 86400, "maxretry": 4}"#);
    assert_eq!((params["bantimeSeconds"].as_str(), params["maxretry"].as_u64()), (Some("86400"), Some(4)));
    let ignore = call("AddIgnoreIp", r#"{"jail": "beta", "ip": "10.0.0.0/8"}"#);
    assert_eq!(ignore["ignoreIps"][0], "10.0.0.0/8");
    let ignore = call("RemoveIgnoreIp", r#"{"jail": "beta", "ip": "10.0.0.0/8"}"#);
    assert!(ignore.get("ignoreIps").is_none(), "empty list: {ignore}");
    call("StopJail", r#"{"jail": "beta"}"#);
    let started = call("StartJail", r#"{"jail": "beta"}"#);
    assert_eq!(started["started"], true);

    assert_eq!(called, methods, "every listed RPC is called here (and in the README tour)");

    // Errors read well in grpcurl too.
    let out = grpcurl(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        r#"{"jail": "alpha", "ip": "300.1.1.1"}"#,
        &addr,
        &format!("{SERVICE}/BanIp"),
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("InvalidArgument") && text.contains("ip:"), "{text}");
    let out =
        grpcurl(&["-plaintext", "-H", &bearer, "-d", r#"{"jail": "nope"}"#, &addr, &format!("{SERVICE}/GetJail")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // Health, overall and per dependency.
    for service in ["", "fail2ban", "database"] {
        let health = grpcurl_json(&[
            "-plaintext",
            "-d",
            &format!(r#"{{"service": "{service}"}}"#),
            &addr,
            "grpc.health.v1.Health/Check",
        ]);
        assert_eq!(health["status"], "SERVING", "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_control_services() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock").display().to_string();
    let control = ControlService::start(&["--fail2ban-socket", &socket]);
    let addr = control.grpc_addr.to_string();
    let out = grpcurl(&["-plaintext", &addr, "list"]);
    let services = String::from_utf8_lossy(&out.stdout);
    for service in [SERVICE, "grpc.health.v1.Health"] {
        assert!(services.lines().any(|l| l == service), "{service} missing from:\n{services}");
    }
    let described = grpcurl(&["-plaintext", &addr, "describe", "bangui.control.v1.Ban"]);
    let text = String::from_utf8_lossy(&described.stdout);
    for field in
        ["string jail", "string ip", ".google.protobuf.Timestamp banned_at", "int64 ban_seconds", "string country_code"]
    {
        assert!(text.contains(field), "{field} missing from:\n{text}");
    }
    // Without a token: UNAUTHENTICATED.
    let out = grpcurl(&["-plaintext", &addr, &format!("{SERVICE}/GetServerStatus")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without fail2ban the service still answers, and says why.
    let bearer = format!("authorization: Bearer {}", control.token().await);
    let status = grpcurl_json(&["-plaintext", "-H", &bearer, &addr, &format!("{SERVICE}/GetServerStatus")]);
    assert!(status.get("online").is_none(), "false is omitted: {status}");
    assert!(status["unavailableReason"].as_str().unwrap().contains("none.sock"));
    let health =
        grpcurl_json(&["-plaintext", "-d", r#"{"service": "fail2ban"}"#, &addr, "grpc.health.v1.Health/Check"]);
    assert_eq!(health["status"], "NOT_SERVING");
}

/// grpcurl decodes the details of an error (reflection serves google.rpc):
/// the field violation of an INVALID_ARGUMENT and the retry delay of a
/// throttled login. Before, it printed "google.rpc.BadRequest is not
/// recognized" and the raw bytes.
#[tokio::test]
async fn grpcurl_shows_error_details() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock").display().to_string();
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--login-max-failures", "2"]);
    let addr = control.grpc_addr.to_string();
    let bearer = format!("authorization: Bearer {}", control.token().await);

    let body = r#"{"jail": "alpha", "ip": "300.1.1.1"}"#;
    let out = grpcurl(&["-plaintext", "-H", &bearer, "-d", body, &addr, &format!("{SERVICE}/BanIp")]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Code: InvalidArgument") && !text.contains("not recognized"), "{text}");
    let details = grpcurl_error_details(&out);
    assert_eq!(details.len(), 1, "{text}");
    assert_eq!(details[0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(
        details[0]["fieldViolations"],
        serde_json::json!([{"field": "ip", "description": "\"300.1.1.1\" is not an IP address"}]),
        "{text}"
    );

    // Wrong passwords until the address is throttled: RetryInfo says how long.
    let wrong = r#"{"password": "not the password at all"}"#;
    let mut throttled = None;
    for _ in 0..5 {
        let out = grpcurl(&["-plaintext", "-d", wrong, &addr, "bangui.control.v1.AuthService/Login"]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if text.contains("Code: ResourceExhausted") {
            throttled = Some((text, grpcurl_error_details(&out)));
            break;
        }
        assert!(text.contains("Code: Unauthenticated"), "{text}");
    }
    let (text, details) = throttled.expect("no RESOURCE_EXHAUSTED after 5 wrong logins with --login-max-failures 2");
    assert_eq!(details.len(), 1, "{text}");
    assert_eq!(details[0]["@type"], "type.googleapis.com/google.rpc.RetryInfo", "{text}");
    let delay = details[0]["retryDelay"].as_str().unwrap_or_else(|| panic!("no retryDelay: {text}"));
    let seconds: f64 = delay.strip_suffix('s').and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{delay}"));
    // The message says the same wait ("retry in 900s").
    assert!(text.contains(&format!("retry in {seconds}s")), "{text}");
    assert!(seconds > 0.0 && seconds <= 900.0, "{text}");
}
