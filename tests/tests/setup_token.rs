//! The one-time setup token and the files that hold secrets, against the
//! real binaries: the log names the token's file, never the token; there
//! is one valid token at a time, kept across restarts (a lost file is
//! written again with it) and shared by replicas on one PostgreSQL; an
//! expired token is replaced and every replica's file follows; Setup ends
//! it everywhere. Both services' SQLite files are the owner's only (0600).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use bangui_e2e::{CONTROL_PASSWORD, ControlService, GeoService, PgSchema, ServiceProcess, eventually};
use bangui_proto::control::v1 as pb;
use tonic::Code;

fn no_fail2ban(dir: &tempfile::TempDir) -> String {
    dir.path().join("none.sock").display().to_string()
}

fn setup(token: &str) -> pb::SetupRequest {
    pb::SetupRequest { password: CONTROL_PASSWORD.into(), setup_token: token.into() }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The service's JSON log lines.
fn json_logs(service: &ServiceProcess) -> Vec<serde_json::Value> {
    service.logs().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Asserts that no output line of `service` holds any of `tokens`, and
/// that the line saying setup is pending names `file` at WARN.
fn logs_name_the_file_only(service: &ServiceProcess, file: &Path, tokens: &[&str]) {
    for line in service.logs() {
        for token in tokens {
            assert!(!line.contains(token), "the token is in the log: {line}");
        }
    }
    let pending: Vec<_> = json_logs(service)
        .into_iter()
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("setup pending")))
        .collect();
    assert!(!pending.is_empty(), "a line says setup is pending: {:?}", service.logs());
    for line in &pending {
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["setup_token_file"], file.display().to_string(), "{line}");
        assert!(line.get("setup_token").is_none(), "{line}");
    }
}

/// The `setup_token` rows of a SQLite control database: (token, expires_at).
async fn sqlite_tokens(db: &Path) -> Vec<(String, i64)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let rows = sqlx::query_as("SELECT token, expires_at FROM setup_token").fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// The `setup_token` rows of a PostgreSQL control database: (token, expires_at).
async fn pg_tokens(schema: &PgSchema) -> Vec<(String, i64)> {
    let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
    let rows = sqlx::query_as("SELECT token, expires_at FROM setup_token").fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

fn unix_now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[tokio::test]
async fn the_log_names_the_file_and_a_restart_keeps_the_one_token() {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("control.db");
    let db = format!("sqlite://{}", db_file.display());
    let file = dir.path().join("setup-token");
    let socket = no_fail2ban(&dir);
    let file_arg = file.display().to_string();
    let args = ["--fail2ban-socket", &socket, "--database-url", &db, "--setup-token-file", &file_arg];

    let first = ControlService::start(&args);
    let token = first.setup_token();
    assert_eq!(token.len(), 43, "256 bits in base64url");
    assert_eq!(mode(&file), 0o600);
    logs_name_the_file_only(&first, &file, &[&token]);
    let rows = sqlite_tokens(&db_file).await;
    assert_eq!(rows.len(), 1);
    let expires_at = rows[0].1;
    assert!((expires_at - unix_now() - 86_400).abs() <= 60, "valid for 24 h: {expires_at}");
    first.shutdown().await;

    // The file is lost (e.g. an emptyDir), the service restarts: the same
    // token, written again; still the only one.
    std::fs::remove_file(&file).unwrap();
    let second = ControlService::start(&args);
    assert_eq!(second.setup_token(), token, "a restart keeps the token");
    logs_name_the_file_only(&second, &file, &[&token]);
    assert_eq!(sqlite_tokens(&db_file).await, [(token.clone(), expires_at)], "one token, its expiry unchanged");
    let mut auth = second.auth().await;
    let made_up = "x".repeat(43);
    assert_eq!(auth.setup(setup(&made_up)).await.unwrap_err().code(), Code::PermissionDenied);

    auth.setup(setup(&token)).await.unwrap();
    assert!(!file.exists(), "the file goes with the setup");
    assert!(sqlite_tokens(&db_file).await.is_empty(), "so does the token");
    assert_eq!(auth.setup(setup(&token)).await.unwrap_err().code(), Code::FailedPrecondition);
    second.shutdown().await;
    // A start with a password set writes no token.
    let third = ControlService::start(&args);
    assert!(!file.exists() && sqlite_tokens(&db_file).await.is_empty());
    third.shutdown().await;
}

#[tokio::test]
async fn replicas_on_postgres_show_one_token_until_it_is_used_or_expires() {
    let schema = PgSchema::create("setup_token_replicas").await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let (file_a, file_b): (PathBuf, PathBuf) = (dir.path().join("a-token"), dir.path().join("b-token"));
    let start = |file: &Path| {
        let file = file.display().to_string();
        ControlService::start(&["--database-url", &url, "--fail2ban-socket", &socket, "--setup-token-file", &file])
    };

    // Started one after the other: both files show the same token.
    let a = start(&file_a);
    let b = start(&file_b);
    let token = a.setup_token();
    assert_eq!(b.setup_token(), token, "one token for the cluster");
    assert_eq!(pg_tokens(&schema).await.len(), 1);

    // B restarts with an older token in its file: the file shows the
    // current one again, and the older one is refused like a wrong one.
    b.shutdown().await;
    let older = "an-older-setup-token-from-an-earlier-start-";
    std::fs::write(&file_b, older).unwrap();
    let b = start(&file_b);
    assert_eq!(b.setup_token(), token);
    for replica in [&a, &b] {
        let status = replica.auth().await.setup(setup(older)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // A rolling update replaces A by a pod with an empty data volume.
    a.shutdown().await;
    std::fs::remove_file(&file_a).unwrap();
    let a = start(&file_a);
    assert_eq!(a.setup_token(), token, "a new pod shows the same token");
    assert_eq!(pg_tokens(&schema).await.len(), 1, "restarts added no token");

    // 24 h later, as the services see it: the stored expiry is moved into
    // the past (each replica compares it with its own clock). The next
    // refresh (every 10 s) replaces the token, and both files follow.
    let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
    sqlx::query("UPDATE setup_token SET expires_at = $1").bind(unix_now() - 1).execute(&pool).await.unwrap();
    pool.close().await;
    eventually(30, "both files show a new token", || async {
        let (x, y) = (std::fs::read_to_string(&file_a).unwrap(), std::fs::read_to_string(&file_b).unwrap());
        x == y && x.trim() != token
    })
    .await;
    let renewed = a.setup_token();
    assert_eq!(pg_tokens(&schema).await.len(), 1);
    let status = b.auth().await.setup(setup(&token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "the expired token: {status:?}");

    // Setup on B: the token ends everywhere, and A's file goes too.
    b.auth().await.setup(setup(&renewed)).await.unwrap();
    assert!(!file_b.exists());
    assert!(pg_tokens(&schema).await.is_empty());
    eventually(30, "A removes its token file", || async { !file_a.exists() }).await;
    let status = a.auth().await.setup(setup(&renewed)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    for (replica, file) in [(&a, &file_a), (&b, &file_b)] {
        logs_name_the_file_only(replica, file, &[&token, &renewed]);
    }
}

#[tokio::test]
async fn both_services_sqlite_files_are_the_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &no_fail2ban(&dir)]);
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    for (service, name) in [(&*control, "control-service.db"), (&*geo, "geo-service.db")] {
        let data = service.data_dir().unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let path = data.join(format!("{name}{suffix}"));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
