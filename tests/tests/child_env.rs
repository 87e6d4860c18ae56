//! The control-service's child process against a real fail2ban-server:
//! StartJail runs `fail2ban-client` (here a wrapper found first on PATH
//! that writes the environment it got, then runs the real one) with the
//! path and the locale only, none of the service's secrets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use bangui_e2e::{Bearer, ServiceProcess, fail2ban::Fail2banServer};
use bangui_proto::control::v1::{
    self as pb, auth_service_client::AuthServiceClient, jail_service_client::JailServiceClient,
};

const PASSWORD: &str = "a password from a Secret";
const GEO_TOKEN: &str = "geo-token-that-must-stay-in-the-service";
const DB_PASSWORD: &str = "db-password-that-must-stay-in-the-service";

/// What the shell itself adds to the environment it passes on.
const SHELL_SET: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

fn hash_password(password: &str) -> String {
    let mut child = Command::new(bangui_e2e::binary("control-service"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The first `fail2ban-client` on this process's PATH.
fn real_fail2ban_client() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path).map(|dir| dir.join("fail2ban-client")).find(|p| p.is_file()).expect("fail2ban-client")
}

#[tokio::test]
async fn start_jail_runs_fail2ban_client_without_the_services_secrets() {
    let f2b = Fail2banServer::start();
    let phc = hash_password(PASSWORD);
    let bin = tempfile::tempdir().unwrap();
    let dump = bin.path().join("env.txt");
    let wrapper = bin.path().join("fail2ban-client");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nenv > '{}'\nexec '{}' \"$@\"\n", dump.display(), real_fail2ban_client().display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    // The secrets come from the environment, as on Kubernetes; the
    // database URL is overridden by the harness's --database-url but stays
    // in the environment.
    let db_url = format!("postgres://bangui:{DB_PASSWORD}@127.0.0.1:1/bangui");
    let env = [
        ("PATH", path.as_str()),
        ("LANG", "C.UTF-8"),
        ("CONTROL_GEO_AUTH_TOKEN", GEO_TOKEN),
        ("CONTROL_ADMIN_PASSWORD_HASH", phc.as_str()),
        ("CONTROL_DATABASE_URL", db_url.as_str()),
    ];
    let clear =
        ["CONTROL_FAIL2BAN_SOCKET", "CONTROL_GEO_ENDPOINT", "CONTROL_SETUP_TOKEN_FILE", "CONTROL_FAIL2BAN_CLIENT"];
    let socket = f2b.socket_str();
    let config = f2b.config_dir().display().to_string();
    let control = ServiceProcess::spawn_with_env(
        "control-service",
        &clear,
        &env,
        &["--fail2ban-socket", &socket, "--fail2ban-config-dir", &config],
    );
    let environ = std::fs::read(format!("/proc/{}/environ", control.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in [GEO_TOKEN, DB_PASSWORD, phc.as_str()] {
        assert!(environ.contains(secret), "the service itself has {secret} in its environment");
    }

    let login = AuthServiceClient::new(control.channel().await)
        .login(pb::LoginRequest { password: PASSWORD.into() })
        .await
        .unwrap()
        .into_inner();
    let bearer = Bearer(format!("Bearer {}", login.token).parse().unwrap());
    let mut jails = JailServiceClient::with_interceptor(control.channel().await, bearer);
    jails.stop_jail(pb::StopJailRequest { jail: "beta".into(), ..Default::default() }).await.unwrap();
    let started = jails
        .start_jail(pb::StartJailRequest { jail: "beta".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(started.started, "the real fail2ban-client ran under the wrapper");
    assert!(f2b.client_ok(&["status"]).contains("alpha, beta"));

    let seen = std::fs::read_to_string(&dump).expect("the wrapper ran");
    for secret in [GEO_TOKEN, DB_PASSWORD, phc.as_str()] {
        assert!(!seen.contains(secret), "the child saw a secret:\n{seen}");
    }
    let names: Vec<&str> = seen.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    for name in &names {
        assert!(
            ["PATH", "LANG", "LC_ALL", "LC_CTYPE"].contains(name) || SHELL_SET.contains(name),
            "the child saw {name}:\n{seen}"
        );
    }
    assert!(seen.lines().any(|l| l == format!("PATH={path}")), "the path is passed:\n{seen}");
    assert!(seen.lines().any(|l| l == "LANG=C.UTF-8"), "the locale is passed:\n{seen}");
}
