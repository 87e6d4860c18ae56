//! Blocklist imports end to end: a local HTTP server the test owns serves
//! lists in every common format, a real fail2ban-server runs the
//! `blocklist-import` jail from the deploy file, and the real
//! control-service imports through BlocklistService. After an import the
//! jail holds exactly the list's valid public addresses; an unchanged list
//! sends fail2ban nothing; a changed one bans the new and unbans the
//! removed, never a log ban nor an address another source lists; every
//! failure bans nothing; bad input changes nothing; two replicas on
//! PostgreSQL import once per slot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use bangui_e2e::{
    Authed, ControlService, PgSchema, eventually,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
};
use bangui_proto::control::v1::{
    self as pb, blocklist_service_client::BlocklistServiceClient, history_service_client::HistoryServiceClient,
};
use bangui_testkit::list_server::ListServer;
use tonic::Code;

fn fail2ban() -> Fail2banServer {
    Fail2banServer::start_with(&Fail2banOptions { blocklist_jail: true, ..Fail2banOptions::default() })
}

/// A control-service for `f2b` that may download from the test's loopback
/// server, never bans 9.9.9.9, and takes run-now requests quickly.
fn control(f2b: &Fail2banServer, extra: &[&str]) -> ControlService {
    let mut args = vec![
        "--fail2ban-socket",
        f2b.socket_str().leak(),
        "--blocklist-allow-private",
        "--never-ban",
        "9.9.9.9",
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
    ];
    args.extend_from_slice(extra);
    ControlService::start(&args)
}

async fn client(control: &ControlService) -> BlocklistServiceClient<Authed> {
    BlocklistServiceClient::new(control.authed().await)
}

fn spec(name: &str, url: &str) -> pb::SourceSpec {
    pb::SourceSpec { name: name.into(), url: url.into(), enabled: true, ..Default::default() }
}

async fn create(client: &mut BlocklistServiceClient<Authed>, name: &str, url: &str) -> i64 {
    let created = client.create_source(pb::CreateSourceRequest { spec: Some(spec(name, url)) }).await.unwrap();
    created.into_inner().source.unwrap().id
}

/// Imports source `id` now and returns its run.
async fn import(client: &mut BlocklistServiceClient<Authed>, id: i64) -> pb::ImportRun {
    let response = client.import_now(pb::ImportNowRequest { id, wait: true }).await.unwrap().into_inner();
    assert_eq!(response.source_ids, vec![id]);
    response.runs.into_iter().next().expect("the import ended within the wait")
}

fn counts(run: &pb::ImportRun) -> pb::ImportCounts {
    run.counts.unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn banned(f2b: &Fail2banServer) -> BTreeSet<String> {
    f2b.banned(BLOCKLIST_JAIL).into_iter().collect()
}

/// Commands this control-service sent fail2ban that change jails (`set`;
/// reads and the health probe's `ping` are not counted).
async fn jail_commands(control: &ControlService) -> f64 {
    let text = control.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with("control_fail2ban_commands_total{") && l.contains("command=\"set\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A blocklist.de-style list with what must never be banned mixed in.
const FIRST: &str = "\u{feff}# blocklist.de all.txt, with strays\r\n\
    1.10.16.1\r\n\
    45.13.0.2\r\n\
    2a01:4f8::1\r\n\
    5.5.5.5\r\n\
    10.0.0.1\r\n\
    127.0.0.1\r\n\
    8.8.8.8\r\n\
    9.9.9.9\r\n\
    45.13.0.2\r\n\
    not-an-address\r\n\
    185.220.0.0/16 ; a network, skipped by default\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_mirrors_the_list_and_never_touches_other_bans() {
    let f2b = fail2ban();
    // The jail's own ignoreip, and a ban fail2ban makes from a log line.
    f2b.client_ok(&["set", BLOCKLIST_JAIL, "addignoreip", "8.8.8.0/24"]);
    f2b.fail_logins(BLOCKLIST_JAIL, "5.5.5.5", 1);
    f2b.fail_logins(BLOCKLIST_JAIL, "6.6.6.6", 1);
    let log_bans = set(&["5.5.5.5", "6.6.6.6"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while banned(&f2b) != log_bans {
        assert!(std::time::Instant::now() < deadline, "log bans: {:?}", banned(&f2b));
        std::thread::sleep(Duration::from_millis(200));
    }
    let lists = ListServer::start().await;
    lists.set("all.txt", FIRST);
    let control = control(&f2b, &[]);
    let mut client = client(&control).await;
    let id = create(&mut client, "blocklist-de", &lists.url("all.txt")).await;

    let run = import(&mut client, id).await;
    assert_eq!((run.status.as_str(), run.http_status, run.trigger.as_str()), ("ok", 200, "manual"), "{run:?}");
    let c = counts(&run);
    assert_eq!(
        (c.valid, c.invalid, c.duplicate, c.reserved, c.ignored, c.never_ban, c.cidr_skipped),
        (8, 1, 1, 2, 1, 1, 1),
        "{c:?}"
    );
    assert_eq!((c.newly_banned, c.already_banned, c.unbanned, c.failed), (3, 1, 0, 0), "{c:?}");
    assert_eq!(run.bad_lines, vec![pb::BadLine { line: 11, text: "not-an-address".into() }]);
    assert_eq!(banned(&f2b), set(&["1.10.16.1", "45.13.0.2", "2a01:4f8::1", "5.5.5.5", "6.6.6.6"]));

    // The same list again: a 304, and not one ban or unban reaches fail2ban
    // (it is asked what the jail holds, which is all there).
    let before = jail_commands(&control).await;
    let run = import(&mut client, id).await;
    assert_eq!((run.status.as_str(), run.http_status), ("unchanged", 304), "{run:?}");
    assert_eq!(jail_commands(&control).await, before, "an unchanged list changes nothing in fail2ban");
    let seen = lists.requests("all.txt");
    assert!(seen.last().unwrap().if_none_match.is_some(), "the second download was conditional: {seen:?}");

    // Another source lists 45.13.0.2 too.
    lists.set("other.txt", "45.13.0.2\n203.0.114.9\n");
    let other = create(&mut client, "other", &lists.url("other.txt")).await;
    let run = import(&mut client, other).await;
    assert_eq!((counts(&run).newly_banned, counts(&run).already_banned), (1, 1), "{run:?}");

    // The list changes: 1.10.16.1, 45.13.0.2 (listed by `other`) and 5.5.5.5
    // (a log ban) leave it, 77.88.8.8 comes in.
    lists.set("all.txt", "2a01:4f8::1\n77.88.8.8\n");
    let run = import(&mut client, id).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!((counts(&run).newly_banned, counts(&run).unbanned), (1, 1), "{run:?}");
    assert_eq!(banned(&f2b), set(&["2a01:4f8::1", "77.88.8.8", "45.13.0.2", "203.0.114.9", "5.5.5.5", "6.6.6.6"]));

    // Deleting `other` unbans what only it listed (45.13.0.2 no longer listed
    // anywhere, 203.0.114.9) and nothing else.
    let deleted = client.delete_source(pb::DeleteSourceRequest { id: other }).await.unwrap().into_inner();
    assert_eq!(deleted.unbanned, 2);
    assert_eq!(banned(&f2b), set(&["2a01:4f8::1", "77.88.8.8", "5.5.5.5", "6.6.6.6"]));
    let gone = client.get_source(pb::GetSourceRequest { id: other }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Every ban and unban reached the history, origin blocklist, with the source.
    let mut history = HistoryServiceClient::new(control.authed().await);
    let filter =
        pb::HistoryFilter { window: pb::Window::Window24h.into(), origin: "blocklist".into(), ..Default::default() };
    let page = history
        .list_bans(pb::ListBansRequest { filter: Some(filter), page_size: 100, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    let bans: BTreeSet<(String, String, String)> =
        page.bans.iter().map(|b| (b.ip.clone(), b.event.clone(), b.source.clone())).collect();
    for ip in ["1.10.16.1", "45.13.0.2", "2a01:4f8::1", "77.88.8.8"] {
        assert!(bans.contains(&(ip.into(), "ban".into(), "blocklist-de".into())), "{ip}: {bans:?}");
    }
    assert!(bans.contains(&("1.10.16.1".into(), "unban".into(), "blocklist-de".into())), "{bans:?}");
    assert!(!bans.iter().any(|(ip, _, _)| ip == "5.5.5.5" || ip == "6.6.6.6"), "log bans are not blocklist bans");

    // The history sync copies fail2ban's own rows: the log bans come in as
    // origin fail2ban, the imports' bans are not archived a second time.
    control.set_history_sync_schedule("* * * * * *").await;
    let fail2ban_bans = || {
        let mut history = history.clone();
        async move {
            let filter = pb::HistoryFilter {
                window: pb::Window::Window24h.into(),
                origin: "fail2ban".into(),
                ..Default::default()
            };
            let request = pb::ListBansRequest { filter: Some(filter), page_size: 100, page_token: String::new() };
            let bans = history.list_bans(request).await.unwrap().into_inner().bans;
            bans.into_iter().map(|b| b.ip).collect::<BTreeSet<String>>()
        }
    };
    eventually(20, "the log bans archived by the sync", || async {
        fail2ban_bans().await == set(&["5.5.5.5", "6.6.6.6"])
    })
    .await;
    // Two more syncs: still nothing of the imports as origin fail2ban.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fail2ban_bans().await, set(&["5.5.5.5", "6.6.6.6"]));

    // The runs, newest first, paged.
    let first = client
        .list_import_runs(pb::ListImportRunsRequest { source_id: id, page_size: 2, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["ok", "unchanged"]);
    let rest = client
        .list_import_runs(pb::ListImportRunsRequest { source_id: id, page_size: 2, page_token: first.next_page_token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.runs.len(), 1);
    let one = client.get_import_run(pb::GetImportRunRequest { id: rest.runs[0].id }).await.unwrap().into_inner();
    assert_eq!(one.run.unwrap(), rest.runs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_read() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    let control = control(&f2b, &[]);
    let mut client = client(&control).await;
    let formats: [(&str, &str, &[&str]); 5] = [
        (
            "drop.txt",
            "; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project\n\
             ; Last-Modified: Mon, 30 Nov 2026 12:00:00 GMT\n\
             1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n",
            &["1.10.16.0/20", "2.56.192.0/22"],
        ),
        (
            "drop_v4.json",
            "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\",\"rir\":\"apnic\"}\n\
             {\"cidr\":\"2.56.192.0/22\",\"sblid\":\"SBL459831\",\"rir\":\"ripencc\"}\n\
             {\"type\":\"metadata\",\"timestamp\":1764590000,\"size\":120,\"records\":2,\"copyright\":\"(c) 2026 The Spamhaus Project SLU\",\"terms\":\"https://www.spamhaus.org/drop/terms/\"}\n",
            &["1.10.16.0/20", "2.56.192.0/22"],
        ),
        (
            "firehol_level1.netset",
            "#\n# firehol_level1\n#\n# ipv4 hash:net ipset\n#\n0.0.0.0/8\n1.10.16.0/20\n10.0.0.0/8\n\
             31.14.65.0/24\n192.168.0.0/16\n",
            &["1.10.16.0/20", "31.14.65.0/24"],
        ),
        (
            "ipblocklist.txt",
            "################################################################\n\
             # abuse.ch Feodo Tracker Botnet C2 IP Blocklist                #\n\
             ################################################################\n\
             #\n# DstIP\n50.16.16.211\n162.243.103.246\n# END 2 entries\n",
            &["50.16.16.211", "162.243.103.246"],
        ),
        (
            "ipsum.txt",
            "# IPsum Threat Intelligence Feed\n#\n185.224.128.17\t10\n45.148.10.81\t9\n",
            &["185.224.128.17", "45.148.10.81"],
        ),
    ];
    for (i, (file, body, want)) in formats.iter().enumerate() {
        lists.set(file, *body);
        let mut s = spec(&format!("list-{i}"), &lists.url(file));
        // Networks banned as they are, so DROP and netsets land in the jail.
        s.cidr_policy = "ban".into();
        s.enabled = false;
        let created = client.create_source(pb::CreateSourceRequest { spec: Some(s) }).await.unwrap().into_inner();
        let id = created.source.unwrap().id;
        let preview =
            client.preview_source(pb::PreviewSourceRequest { id, ..Default::default() }).await.unwrap().into_inner();
        let mut entries = preview.entries.clone();
        entries.sort();
        let mut expected: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(entries, expected, "{file}: {preview:?}");
        assert_eq!(preview.counts.unwrap().invalid, 0, "{file}: {preview:?}");
        let run = import(&mut client, id).await;
        assert_eq!(run.status, "ok", "{file}: {run:?}");
        let jail = banned(&f2b);
        for entry in *want {
            assert!(jail.contains(*entry), "{file}: {entry} not in {jail:?}");
        }
    }
    assert!(!banned(&f2b).iter().any(|e| e.starts_with("10.") || e.starts_with("0.") || e.starts_with("192.168.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_downloads_and_unusable_lists_ban_nothing() {
    let mut f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set_html("html");
    lists.set_oversize("big", 20 * 1024 * 1024, false);
    lists.set_redirects("hops", 4, "good.txt");
    lists.set("good.txt", "1.10.16.1\n45.13.0.2\n");
    lists.set_failures("gone", vec![404]);
    let control = control(&f2b, &["--blocklist-timeout", "2s"]);
    let mut client = client(&control).await;
    for (name, path, error) in
        [("html", "html", "HTML"), ("big", "big", "16777216"), ("hops", "hops", "redirect"), ("gone", "gone", "404")]
    {
        let id = create(&mut client, name, &lists.url(path)).await;
        let run = import(&mut client, id).await;
        assert_eq!(run.status, "failed", "{name}: {run:?}");
        assert!(run.error.contains(error), "{name}: {}", run.error);
        assert_eq!(counts(&run).newly_banned, 0);
        assert!(banned(&f2b).is_empty(), "{name}: {:?}", banned(&f2b));
    }

    // A source is not deleted while its import runs (here: a download that
    // stalls until the timeout, three attempts).
    lists.set_stall("stall");
    let stalled = create(&mut client, "stall", &lists.url("stall")).await;
    client.import_now(pb::ImportNowRequest { id: stalled, wait: false }).await.unwrap();
    eventually(10, "the stalled download started", || async { lists.hits("stall") > 0 }).await;
    let busy = client.delete_source(pb::DeleteSourceRequest { id: stalled }).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    assert!(busy.message().contains("running"), "{}", busy.message());
    eventually(40, "the stalled import ended", || async {
        let mut client = client.clone();
        let runs = client
            .list_import_runs(pb::ListImportRunsRequest { source_id: stalled, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .runs;
        runs.first().is_some_and(|r| r.status == "failed")
    })
    .await;
    client.delete_source(pb::DeleteSourceRequest { id: stalled }).await.unwrap();

    // fail2ban down: failed, and nothing is recorded as banned: once it is
    // back, the same list bans everything.
    let good = create(&mut client, "good", &lists.url("good.txt")).await;
    f2b.stop();
    let run = import(&mut client, good).await;
    assert_eq!(run.status, "failed", "{run:?}");
    assert!(run.error.contains("fail2ban"), "{}", run.error);
    f2b.restart();
    let run = import(&mut client, good).await;
    assert_eq!((run.status.as_str(), counts(&run).newly_banned), ("ok", 2), "{run:?}");
    assert_eq!(banned(&f2b), set(&["1.10.16.1", "45.13.0.2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_stores_nothing() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set("a.txt", "1.10.16.1\n");
    let control = control(&f2b, &[]);
    let mut client = client(&control).await;
    let id = create(&mut client, "taken", &lists.url("a.txt")).await;
    let url = lists.url("a.txt");
    let long = "n".repeat(65);
    let cases: Vec<(pb::SourceSpec, Code, &str)> = vec![
        (spec("ftp", "ftp://example.org/list.txt"), Code::InvalidArgument, "url"),
        (spec("", &url), Code::InvalidArgument, "name"),
        (spec(&long, &url), Code::InvalidArgument, "name"),
        (spec("sp ace", &url), Code::InvalidArgument, "name"),
        (pb::SourceSpec { schedule: "every day".into(), ..spec("cron", &url) }, Code::InvalidArgument, "schedule"),
        (pb::SourceSpec { schedule: "0 0 * * *".into(), ..spec("cron5", &url) }, Code::InvalidArgument, "schedule"),
        (pb::SourceSpec { cidr_policy: "maybe".into(), ..spec("policy", &url) }, Code::InvalidArgument, "cidr_policy"),
        (pb::SourceSpec { max_bytes: 1 << 40, ..spec("huge", &url) }, Code::InvalidArgument, "max_bytes"),
        (
            pb::SourceSpec { jail: "no-such-jail".into(), ..spec("jail", &url) },
            Code::FailedPrecondition,
            "no-such-jail",
        ),
        (spec("taken", &url), Code::AlreadyExists, "taken"),
    ];
    for (spec, code, says) in cases {
        let error = client.create_source(pb::CreateSourceRequest { spec: Some(spec.clone()) }).await.unwrap_err();
        assert_eq!(error.code(), code, "{spec:?}: {error:?}");
        assert!(error.message().contains(says), "{spec:?}: {}", error.message());
    }
    let listed = client.list_sources(pb::ListSourcesRequest {}).await.unwrap().into_inner().sources;
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id], "nothing else was stored");
    // An update with a bad field changes nothing either.
    let bad = pb::SourceSpec { cidr_policy: "maybe".into(), ..spec("taken", &url) };
    let error = client.update_source(pb::UpdateSourceRequest { id, spec: Some(bad) }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let kept = client.get_source(pb::GetSourceRequest { id }).await.unwrap().into_inner().source.unwrap();
    assert_eq!(kept.spec.unwrap().cidr_policy, "skip");

    for missing in [
        client.get_source(pb::GetSourceRequest { id: 999 }).await.unwrap_err(),
        client.delete_source(pb::DeleteSourceRequest { id: 999 }).await.unwrap_err(),
        client.import_now(pb::ImportNowRequest { id: 999, wait: false }).await.unwrap_err(),
        client.get_import_run(pb::GetImportRunRequest { id: 999 }).await.unwrap_err(),
        client.list_import_runs(pb::ListImportRunsRequest { source_id: 999, ..Default::default() }).await.unwrap_err(),
    ] {
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    }

    // Without --blocklist-allow-private, a loopback target is refused.
    let closed = ControlService::start(&["--fail2ban-socket", &f2b.socket_str()]);
    let mut closed_client = BlocklistServiceClient::new(closed.authed().await);
    let error =
        closed_client.create_source(pb::CreateSourceRequest { spec: Some(spec("private", &url)) }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("--blocklist-allow-private"), "{}", error.message());
    assert_eq!(lists.total_hits(), 0, "nothing was downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_import_once_per_slot() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set("slots.txt", "1.10.16.1\n");
    let schema = PgSchema::create("control_blocklist").await;
    let url = schema.url();
    let args = ["--database-url", url.as_str()];
    let replicas = [control(&f2b, &args), control(&f2b, &args)];
    let mut client = client(&replicas[0]).await;
    // Every 2 seconds; each import of an unchanged list is a 304.
    let s = pb::SourceSpec { schedule: "*/2 * * * * *".into(), ..spec("slots", &lists.url("slots.txt")) };
    let id =
        client.create_source(pb::CreateSourceRequest { spec: Some(s) }).await.unwrap().into_inner().source.unwrap().id;
    let runs = || async {
        let mut client = BlocklistServiceClient::new(replicas[1].authed().await);
        client
            .list_import_runs(pb::ListImportRunsRequest { source_id: id, page_size: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .runs
    };
    eventually(30, "five scheduled imports", || async { runs().await.len() >= 5 }).await;
    let runs = runs().await;
    assert!(runs.iter().all(|r| r.trigger == "schedule"), "{runs:?}");
    // One download per run: no slot was run by both replicas.
    let hits = lists.hits("slots.txt");
    assert!(hits == runs.len() || hits == runs.len() + 1, "{hits} downloads for {} runs", runs.len());
    // Each run is for a different slot (the ledger's rows, one per slot).
    let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
    let slots: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT scheduled_for, count(*) FROM job_runs WHERE job = $1 GROUP BY scheduled_for ORDER BY scheduled_for",
    )
    .bind(format!("blocklist_import:{id}"))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(slots.len() >= 5 && slots.iter().all(|(_, n)| *n == 1), "{slots:?}");
    let imports: i64 = sqlx::query_scalar("SELECT count(*) FROM blocklist_runs WHERE source_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = $1 AND status <> 'running'")
        .bind(format!("blocklist_import:{id}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(imports == ledger || imports == ledger + 1, "{imports} import runs, {ledger} ledger runs");
    assert_eq!(banned(&f2b), set(&["1.10.16.1"]));
}

/// The `gc …` commands of the README's Blocklists section, continuation
/// lines joined.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(bangui_e2e::workspace_root().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## Blocklists\n").expect("a Blocklists section")..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    block.replace("\\\n", " ").lines().filter(|l| l.starts_with("gc ")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_grpcurl_forms_work_as_written() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    lists.set("all.txt", "# blocklist.de\n1.10.16.1\n45.13.0.2\n");
    lists.set("drop_v4.json", "{\"cidr\":\"2.56.192.0/22\",\"sblid\":\"SBL459831\",\"rir\":\"ripencc\"}\n{\"type\":\"metadata\",\"records\":1}\n");
    let control = control(&f2b, &[]);
    let token = control.token().await;
    let addr = control.grpc_addr.to_string();
    let commands = readme_commands();

    // Every RPC of the service has its example.
    let listed = bangui_e2e::grpcurl(&["-plaintext", &addr, "list", "bangui.control.v1.BlocklistService"]);
    let methods: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
    assert_eq!(methods.len(), 11, "{methods:?}");
    for method in &methods {
        let rpc = format!("BlocklistService/{}", method.rsplit('.').next().unwrap());
        assert!(commands.iter().any(|c| c.contains(&rpc)), "no README example of {rpc}");
    }

    let mut outputs = Vec::new();
    for command in &commands {
        // The README's targets, pointed at this test's servers.
        let command = command
            .replace("127.0.0.1:50052", &addr)
            .replace("https://lists.blocklist.de/lists/all.txt", &lists.url("all.txt"))
            .replace("https://www.spamhaus.org/drop/drop_v4.json", &lists.url("drop_v4.json"));
        let script = format!("gc() {{ grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" \"$@\"; }}\n{command}");
        let out = std::process::Command::new("bash").arg("-c").arg(&script).env("TOKEN", &token).output().unwrap();
        if command.contains("/DeleteException") {
            // No operator unbanned anything here: the form is read, and there is none.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("NotFound") && stderr.contains("no exception for 203.0.113.7"), "{stderr}");
            continue;
        }
        assert!(out.status.success(), "{command}\n{}", String::from_utf8_lossy(&out.stderr));
        outputs.push((command, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let answer = |rpc: &str| -> serde_json::Value {
        let (_, out) = outputs.iter().find(|(c, _)| c.contains(rpc)).unwrap();
        serde_json::from_str(out).unwrap()
    };
    assert_eq!(answer("/ImportNow")["runs"][0]["status"], "ok");
    assert_eq!(answer("/ImportNow")["runs"][0]["counts"]["newlyBanned"], "2", "uint64 is a JSON string");
    assert_eq!(answer("/ListSources")["sources"].as_array().unwrap().len(), 2);
    assert_eq!(answer("/PreviewSource")["entries"][0], "2.56.192.0/22");
    assert_eq!(answer("/DeleteSource")["unbanned"], serde_json::Value::Null, "spamhaus-drop never ran: 0, omitted");
    assert_eq!(banned(&f2b), set(&["1.10.16.1", "45.13.0.2"]));
    // The enabled source is a job of the leader, on the default schedule.
    let jobs = control.cluster_with(&token).await.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs;
    let job = jobs.iter().find(|j| j.name == "blocklist_import:1").expect("the import job is listed");
    assert_eq!(job.schedule, "0 15 */6 * * *");
    assert_eq!(job.last_run.as_ref().map(|r| r.trigger.as_str()), Some("manual"));
    assert!(!jobs.iter().any(|j| j.name == "blocklist_import:2"), "a deleted source has no job");
}

/// `count` distinct public addresses from 11.0.0.0 up, one a line.
fn addresses(count: u32) -> String {
    let mut list = String::with_capacity(count as usize * 12);
    for i in 0..count {
        list.push_str(&std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string());
        list.push('\n');
    }
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_and_most_hostile_lists_keep_memory_bounded() {
    let f2b = fail2ban();
    let lists = ListServer::start().await;
    // The largest list the defaults accept: 500 000 entries (6.9 MB).
    lists.set("full.txt", addresses(500_000));
    // One entry too many.
    lists.set("over.txt", addresses(500_001));
    // 64 MB that gzip makes 64 KB of (a bomb for a 16 MiB cap).
    lists.set_gzip("bomb.txt", "1.2.3.4\n".repeat(8 << 20));
    // 1 GiB streamed without a length.
    lists.set_oversize("endless.txt", 1 << 30, false);
    let control = control(&f2b, &[]);
    let mut client = client(&control).await;
    let preview = |path: &str| pb::PreviewSourceRequest { url: lists.url(path), limit: 5, ..Default::default() };

    // Two at once (the most a process runs), twice.
    for _ in 0..2 {
        let (mut one, mut two) = (client.clone(), client.clone());
        let (a, b) = tokio::join!(one.preview_source(preview("full.txt")), two.preview_source(preview("full.txt")));
        for answer in [a, b] {
            let answer = answer.unwrap().into_inner();
            assert_eq!((answer.counts.unwrap().valid, answer.entries.len()), (500_000, 5));
        }
    }
    let error = client.preview_source(preview("over.txt")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("500000"), "{}", error.message());
    for path in ["bomb.txt", "endless.txt"] {
        let error = client.preview_source(preview(path)).await.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition, "{path}");
        assert!(error.message().contains("16777216"), "{path}: {}", error.message());
    }
    // The same through an import: fails, bans nothing.
    let id = create(&mut client, "bomb", &lists.url("bomb.txt")).await;
    let run = import(&mut client, id).await;
    assert_eq!((run.status.as_str(), counts(&run).newly_banned), ("failed", 0), "{run:?}");

    let peak_kib = control.peak_rss_kib();
    eprintln!("control-service peak RSS after the hostile lists: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 128 * 1024, "peak RSS {peak_kib} KiB is over 128 MiB");
    assert!(banned(&f2b).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_and_its_replacement_stay_in_bounded_memory() {
    let f2b = Fail2banServer::start_with(&Fail2banOptions {
        blocklist_jail: true,
        blocklist_without_action: true,
        ..Fail2banOptions::default()
    });
    let count: u32 = std::env::var("BANGUI_LARGE_IMPORT").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let lists = ListServer::start().await;
    lists.set("large.txt", addresses(count));
    let control = control(&f2b, &[]);
    let mut client = client(&control).await;
    let id = create(&mut client, "large", &lists.url("large.txt")).await;
    let started = std::time::Instant::now();
    let run = import(&mut client, id).await;
    eprintln!(
        "import of {count}: {:?}, {:?}, peak {} MiB",
        started.elapsed(),
        counts(&run),
        control.peak_rss_kib() / 1024
    );
    assert_eq!((run.status.as_str(), counts(&run).newly_banned), ("ok", u64::from(count)), "{run:?}");
    // The list moves on by half: half unbanned, half new.
    let half = count / 2;
    let mut next = String::new();
    for i in half..count + half {
        next.push_str(&std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string());
        next.push('\n');
    }
    lists.set("large.txt", next);
    let started = std::time::Instant::now();
    let run = import(&mut client, id).await;
    eprintln!("replacement: {:?}, {:?}", started.elapsed(), counts(&run));
    let c = counts(&run);
    assert_eq!(
        (run.status.as_str(), c.newly_banned, c.unbanned, c.already_banned),
        ("ok", u64::from(half), u64::from(half), u64::from(count - half))
    );
    assert_eq!(f2b.banned(BLOCKLIST_JAIL).len(), count as usize);
    let peak_kib = control.peak_rss_kib();
    eprintln!("control-service peak RSS, {count} addresses imported and half replaced: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 128 * 1024, "peak RSS {peak_kib} KiB is over 128 MiB");
}
