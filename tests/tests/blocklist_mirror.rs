//! The blocklist mirror converges on what fail2ban holds (issue 20), end to
//! end with a real fail2ban-server and the real control-service:
//!
//! * an operator's UnbanIp of an import's ban is an exception, and an
//!   operator's BanIp is never lifted by an import (it was: `unbanip`);
//! * bans fail2ban lost (a restart with its database deleted) are banned
//!   again by the next import, also when the list did not change (they
//!   were counted as already banned, never banned again);
//! * a source's jail cannot change once its first import started (the
//!   import banned in the old jail and the delete then unbanned nothing);
//! * a hold left by a killed process does not block the source (it did for
//!   15 minutes), and `ImportNow` with `wait` on a held source says who
//!   holds it (it answered with no run and no error).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use bangui_e2e::{
    Authed, ControlService, eventually,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer, JAILS},
};
use bangui_proto::control::v1::{
    self as pb, blocklist_service_client::BlocklistServiceClient, jail_service_client::JailServiceClient,
};
use bangui_testkit::list_server::ListServer;
use tonic::Code;

fn fail2ban() -> Fail2banServer {
    Fail2banServer::start_with(&Fail2banOptions { blocklist_jail: true, ..Fail2banOptions::default() })
}

fn control(f2b: &Fail2banServer, extra: &[&str]) -> ControlService {
    let mut args = vec![
        "--fail2ban-socket",
        f2b.socket_str().leak(),
        "--blocklist-allow-private",
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
    ];
    args.extend_from_slice(extra);
    ControlService::start(&args)
}

async fn clients(control: &ControlService) -> (BlocklistServiceClient<Authed>, JailServiceClient<Authed>) {
    (BlocklistServiceClient::new(control.authed().await), control.jails().await)
}

async fn create(client: &mut BlocklistServiceClient<Authed>, name: &str, url: &str) -> i64 {
    let spec = pb::SourceSpec { name: name.into(), url: url.into(), enabled: true, ..Default::default() };
    client.create_source(pb::CreateSourceRequest { spec: Some(spec) }).await.unwrap().into_inner().source.unwrap().id
}

async fn import(client: &mut BlocklistServiceClient<Authed>, id: i64) -> pb::ImportRun {
    let response = client.import_now(pb::ImportNowRequest { id, wait: true }).await.unwrap().into_inner();
    response.runs.into_iter().next().expect("the import ended within the wait")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn banned(f2b: &Fail2banServer) -> BTreeSet<String> {
    f2b.banned(BLOCKLIST_JAIL).into_iter().collect()
}

async fn unban(jails: &mut JailServiceClient<Authed>, ip: &str) {
    jails
        .unban_ip(pb::UnbanIpRequest { ip: ip.into(), jail: Some(BLOCKLIST_JAIL.into()), ..Default::default() })
        .await
        .unwrap();
}

async fn ban(jails: &mut JailServiceClient<Authed>, ip: &str) {
    jails.ban_ip(pb::BanIpRequest { ip: ip.into(), jail: BLOCKLIST_JAIL.into(), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_unban_is_an_exception_and_an_operators_ban_is_never_lifted() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set("list.txt", "1.1.1.1\n8.8.8.8\n");
    let control = control(&f2b, &[]);
    let (mut blocklists, mut jails) = clients(&control).await;
    let id = create(&mut blocklists, "list", &lists.url("list.txt")).await;
    import(&mut blocklists, id).await;
    assert_eq!(banned(&f2b), set(&["1.1.1.1", "8.8.8.8"]));

    // The reproduction: unban, ban again by hand, the list drops it.
    unban(&mut jails, "8.8.8.8").await;
    let exceptions = blocklists
        .list_exceptions(pb::ListExceptionsRequest { jail: BLOCKLIST_JAIL.into() })
        .await
        .unwrap()
        .into_inner()
        .exceptions;
    assert_eq!(exceptions.iter().map(|e| e.entry.as_str()).collect::<Vec<_>>(), ["8.8.8.8"]);
    ban(&mut jails, "8.8.8.8").await;
    lists.set("list.txt", "1.1.1.1\n");
    let run = import(&mut blocklists, id).await;
    let c = run.counts.unwrap();
    assert_eq!((run.status.as_str(), c.unbanned), ("ok", 0), "{run:?}");
    assert_eq!(banned(&f2b), set(&["1.1.1.1", "8.8.8.8"]), "the operator's ban stays");

    // An exception keeps a listed address out until it is dropped.
    unban(&mut jails, "1.1.1.1").await;
    let run = import(&mut blocklists, id).await;
    assert_eq!(run.counts.unwrap().excepted, 1, "{run:?}");
    assert_eq!(banned(&f2b), set(&["8.8.8.8"]), "not banned again");
    // An unban of what no import banned records nothing.
    unban(&mut jails, "8.8.8.8").await;
    let all = blocklists.list_exceptions(pb::ListExceptionsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.exceptions.iter().map(|e| e.entry.clone()).collect::<BTreeSet<_>>(), set(&["1.1.1.1", "8.8.8.8"]));
    blocklists
        .delete_exception(pb::DeleteExceptionRequest { jail: BLOCKLIST_JAIL.into(), entry: "1.1.1.1".into() })
        .await
        .unwrap();
    let missing = blocklists
        .delete_exception(pb::DeleteExceptionRequest { jail: BLOCKLIST_JAIL.into(), entry: "1.1.1.1".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = blocklists
        .delete_exception(pb::DeleteExceptionRequest { jail: BLOCKLIST_JAIL.into(), entry: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let run = import(&mut blocklists, id).await;
    assert_eq!(run.counts.unwrap().newly_banned, 1, "{run:?}");
    assert_eq!(banned(&f2b), set(&["1.1.1.1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_fail2ban_lost_are_banned_again() {
    let mut f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set("list.txt", "1.1.1.1\n");
    let control = control(&f2b, &[]);
    let (mut blocklists, _) = clients(&control).await;
    let id = create(&mut blocklists, "list", &lists.url("list.txt")).await;
    import(&mut blocklists, id).await;
    assert_eq!(banned(&f2b), set(&["1.1.1.1"]));

    // fail2ban restarts without its database: every ban is gone.
    let lose_every_ban = |f2b: &mut Fail2banServer| {
        f2b.stop();
        std::fs::remove_file(f2b.database()).unwrap();
        f2b.restart();
        assert!(banned(f2b).is_empty());
    };
    lose_every_ban(&mut f2b);
    lists.set("list.txt", "1.1.1.1\n9.9.9.9\n");
    let run = eventually_import(&mut blocklists, id).await;
    let c = run.counts.unwrap();
    assert_eq!((c.newly_banned, c.rebanned, c.already_banned), (2, 1, 0), "{run:?}");
    assert_eq!(banned(&f2b), set(&["1.1.1.1", "9.9.9.9"]));

    // Again, with the list unchanged (a 304): the import repairs the jail.
    lose_every_ban(&mut f2b);
    let run = eventually_import(&mut blocklists, id).await;
    assert_eq!((run.http_status, run.status.as_str()), (304, "ok"), "{run:?}");
    assert_eq!(run.counts.unwrap().rebanned, 2, "{run:?}");
    assert_eq!(banned(&f2b), set(&["1.1.1.1", "9.9.9.9"]));
}

/// An import once the control-service sees fail2ban again after its restart.
async fn eventually_import(blocklists: &mut BlocklistServiceClient<Authed>, id: i64) -> pb::ImportRun {
    for _ in 0..50 {
        let run = import(blocklists, id).await;
        if run.status != "failed" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fail2ban did not come back for the control-service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_jail_is_fixed_once_its_first_import_started() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set_stall("stall");
    let control = control(&f2b, &["--blocklist-timeout", "2s"]);
    let (mut blocklists, _) = clients(&control).await;
    let id = create(&mut blocklists, "slow", &lists.url("stall")).await;
    blocklists.import_now(pb::ImportNowRequest { id, wait: false }).await.unwrap();
    eventually(10, "the first download started", || async { lists.hits("stall") > 0 }).await;
    let moved = pb::SourceSpec {
        name: "slow".into(),
        url: lists.url("stall"),
        enabled: true,
        jail: JAILS[0].into(),
        ..Default::default()
    };
    let refused =
        blocklists.update_source(pb::UpdateSourceRequest { id, spec: Some(moved.clone()) }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("fixed"), "{}", refused.message());
    let source = blocklists.get_source(pb::GetSourceRequest { id }).await.unwrap().into_inner().source.unwrap();
    assert_eq!(source.spec.unwrap().jail, BLOCKLIST_JAIL);
    // A source that never imported may still move.
    let fresh = create(&mut blocklists, "fresh", &lists.url("stall")).await;
    let fresh_spec = pb::SourceSpec { name: "fresh".into(), ..moved };
    let updated = blocklists.update_source(pb::UpdateSourceRequest { id: fresh, spec: Some(fresh_spec) }).await;
    assert_eq!(updated.unwrap().into_inner().source.unwrap().spec.unwrap().jail, JAILS[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_ends_with_its_holder() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set_stall("stall");
    lists.set("list.txt", "1.1.1.1\n");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("control.db").display());
    let args = ["--database-url", db.as_str(), "--replica-id", "control-0", "--blocklist-timeout", "20s"];
    let first = control(&f2b, &args);
    let (mut blocklists, _) = clients(&first).await;
    let stalled = create(&mut blocklists, "stall", &lists.url("stall")).await;
    let good = create(&mut blocklists, "good", &lists.url("list.txt")).await;
    blocklists.import_now(pb::ImportNowRequest { id: stalled, wait: false }).await.unwrap();
    eventually(10, "the download started", || async { lists.hits("stall") > 0 }).await;
    // Held: a delete and a waiting ImportNow say so at once.
    let busy = blocklists.delete_source(pb::DeleteSourceRequest { id: stalled }).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    assert!(busy.message().contains("control-0#"), "names the holder: {}", busy.message());
    let started = std::time::Instant::now();
    let busy = blocklists.import_now(pb::ImportNowRequest { id: stalled, wait: true }).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after the wait");

    // The holder dies mid-import; the same replica starts again and the
    // source is free at once (not after 15 minutes).
    first.kill9();
    let second = control(&f2b, &args);
    let (mut blocklists, _) = clients(&second).await;
    let deleted = blocklists.delete_source(pb::DeleteSourceRequest { id: stalled }).await;
    assert!(deleted.is_ok(), "{deleted:?}");

    // Another replica's hold: refused while fresh, taken over when stale.
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let hold = |since: i64| {
        sqlx::query("UPDATE blocklist_sources SET held_by = 'control-1#00ff', importing_since = ? WHERE id = ?")
            .bind(since)
            .bind(good)
    };
    hold(now).execute(&pool).await.unwrap();
    let busy = blocklists.import_now(pb::ImportNowRequest { id: good, wait: true }).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted);
    assert!(busy.message().contains("control-1#00ff"), "{}", busy.message());
    hold(now - 31).execute(&pool).await.unwrap();
    let run = import(&mut blocklists, good).await;
    assert_eq!(run.status, "ok", "a stale hold is taken over: {run:?}");
    assert_eq!(banned(&f2b), set(&["1.1.1.1"]));
}
