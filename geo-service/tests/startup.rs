//! The binary refuses bad configuration and bad databases at start: a clear
//! message naming the setting or the file, a non-zero exit, nothing served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_geo-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--database-url", "sqlite::memory:"])
        .args(args)
        .env_remove("GEO_MMDB")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_database_file_names_the_file_and_exits_non_zero() {
    let out = run(&["--mmdb", "/nonexistent/GeoLite2-Country.mmdb"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("startup stage `databases` failed"), "{err}");
    assert!(err.contains("/nonexistent/GeoLite2-Country.mmdb"), "{err}");
}

#[test]
fn corrupt_database_file_names_the_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.mmdb");
    let mut bytes = bangui_testkit::maxmind_country();
    bytes.truncate(bytes.len() - 40); // cuts into the metadata section
    std::fs::write(&path, bytes).unwrap();
    let out = run(&["--mmdb", &format!("builtin:sample,{}", path.display())]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&path.display().to_string()) && err.contains("not a valid MaxMind DB"), "{err}");
}

#[test]
fn no_database_at_all_is_a_usage_error() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--mmdb"), "{}", stderr(&out));
}

#[test]
fn bad_settings_from_the_environment_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_geo-service"))
        .env("GEO_MMDB", "builtin:sample")
        .env("GEO_MAX_BATCH", "lots")
        .env("GEO_DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--max-batch"), "{}", stderr(&out));
}

#[test]
fn a_taken_port_names_the_stage_and_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_geo-service"))
        .args(["--mmdb", "builtin:sample", "--metrics-listen", "127.0.0.1:0", "--listen", &addr])
        .args(["--database-url", "sqlite::memory:"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("startup stage `grpc` failed") && err.contains("--listen"), "{err}");
}

#[test]
fn an_unreachable_cache_database_names_the_stage_and_hides_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let out = Command::new(env!("CARGO_BIN_EXE_geo-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mmdb", "builtin:sample"])
        .args(["--database-url", "postgres://geo:s3cret@127.0.0.1:1/geo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("startup stage `cache` failed") && err.contains("--database-url"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

/// Every database URL mistake ends before serving, names --database-url and
/// never prints the password, on stdout (the log) or stderr.
#[test]
fn database_url_errors_never_print_the_password() {
    let urls = [
        "mysql://u:SECRETPW@127.0.0.1/x",
        "postgres://u:SECRETPW@127.0.0.1:notaport/x",
        "postgres//u:SECRETPW@127.0.0.1/x",
        "postgres://u:SECRET@PW@[::1/x",
        "postgres://u@127.0.0.1:notaport/x?password=SECRETPW",
    ];
    for url in urls {
        let out = Command::new(env!("CARGO_BIN_EXE_geo-service"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mmdb", "builtin:sample"])
            .args(["--database-url", url])
            .env_remove("GEO_DATABASE_URL")
            .output()
            .unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!out.status.success(), "{url}: {all}");
        assert!(all.contains("--database-url"), "{url}: {all}");
        assert!(!all.contains("SECRETPW") && !all.contains("SECRET@PW"), "{url}: the password leaked: {all}");
    }
}

/// Closed by default: off loopback, no token means no start (exit 2, the
/// message names the way out), unless the operator opts out explicitly.
#[test]
fn off_loopback_without_a_token_it_refuses_to_start_unless_told_to() {
    let base = ["--mmdb", "builtin:sample", "--metrics-listen", "127.0.0.1:0", "--database-url", "sqlite::memory:"];
    let out = Command::new(env!("CARGO_BIN_EXE_geo-service"))
        .args(base)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("GEO_AUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("GEO_AUTH_TOKEN") && err.contains("--allow-unauthenticated"), "{err}");

    for (flag, env) in [(Some("--allow-unauthenticated"), None), (None, Some(("GEO_AUTH_TOKEN", "s3cret")))] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_geo-service"))
            .args(base)
            .args(["--listen", "0.0.0.0:0", "--log-format", "json"])
            .args(flag)
            .envs(env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let serving = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("\"serving\""));
        let _ = child.kill();
        let _ = child.wait();
        assert!(serving, "{flag:?} {env:?}: did not serve");
    }
}
