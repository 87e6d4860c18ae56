//! The control-service against hostile, huge and unusual fail2ban replies:
//! a fake fail2ban socket served by the test (fail2ban's framing, replies
//! pickled by hand) answering a jail command with a memo-amplification
//! pickle or with 100 000 honest bans; a real fail2ban-server in another
//! time zone; a real fail2ban-server with jail names users could not type.
//!
//! Peak memory is the service's `VmHWM` (/proc/PID/status); run with
//! `--no-capture` to see the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bangui_e2e::{
    ControlService,
    fail2ban::{Fail2banOptions, Fail2banServer},
};
use bangui_proto::control::v1::{self as pb, history_service_client::HistoryServiceClient};
use tonic::Code;

const END: &[u8] = b"<F2B_END_COMMAND>";

/// A value to pickle (protocol 4 opcodes, no memo).
enum Py {
    None,
    Int(i32),
    Str(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
}

fn s(text: &str) -> Py {
    Py::Str(text.into())
}

fn pair(name: &str, value: Py) -> Py {
    Py::Tuple(vec![s(name), value])
}

impl Py {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Py::None => out.push(b'N'),
            Py::Int(n) => {
                out.push(b'J');
                out.extend_from_slice(&n.to_le_bytes());
            }
            Py::Str(text) => {
                out.push(b'X');
                out.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Py::List(items) => {
                out.extend_from_slice(b"](");
                for item in items {
                    item.write(out);
                }
                out.push(b'e');
            }
            Py::Tuple(items) => {
                out.push(b'(');
                for item in items {
                    item.write(out);
                }
                out.push(b't');
            }
        }
    }
}

/// `(0, value)` as fail2ban frames it.
fn reply(value: Py) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    Py::Tuple(vec![Py::Int(0), value]).write(&mut out);
    out.push(b'.');
    out
}

/// `(0, L2)`: one 1 MiB string, memoized, referred to 16 777 216 times
/// (`L1 = [s] * 4096`, `L2 = [L1] * 4096`, BINGET/MEMOIZE in lists).
fn memo_bomb() -> Vec<u8> {
    let text = "x".repeat(1 << 20);
    let mut out = vec![0x80, 4, b'K', 0, b'X'];
    out.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\x940]\x94(");
    for _ in 0..4096 {
        out.extend_from_slice(b"h\x00");
    }
    out.extend_from_slice(b"e0](");
    for _ in 0..4096 {
        out.extend_from_slice(b"h\x01");
    }
    out.extend_from_slice(b"e\x86.");
    out
}

/// 100 000 bans as `get <jail> banip --with-time` lists them, each string
/// memoized and appended in batches of 1 000 (as Python pickles a list).
fn honest_bans(n: u32) -> Vec<u8> {
    let mut out = vec![0x80, 4, b'K', 0, b']', 0x94];
    for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
        out.push(b'(');
        for i in batch {
            let line = format!(
                "10.{}.{}.{} \t2026-11-23 16:17:36 + 3600 = 2026-11-23 17:17:36",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            );
            out.extend_from_slice(&[0x8c, u8::try_from(line.len()).unwrap()]);
            out.extend_from_slice(line.as_bytes());
            out.push(0x94);
        }
        out.push(b'e');
    }
    out.extend_from_slice(&[0x86, 0x94, b'.']);
    out
}

/// A fake fail2ban: answers `ping`, `version`, `status`, `get dbfile` and
/// `status alpha short` like fail2ban 1.0.2 with one empty jail `alpha`,
/// and `get alpha banip --with-time` with `bans`.
struct FakeFail2ban {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    ban_requests: Arc<AtomicUsize>,
}

impl FakeFail2ban {
    fn start(bans: Vec<u8>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("f2b.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let bans = Arc::new(bans);
        let ban_requests = Arc::new(AtomicUsize::new(0));
        let counter = ban_requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let bans = bans.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !request.ends_with(END) {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let has = |word: &[u8]| request.windows(word.len()).any(|w| w == word);
                    let body = if has(b"--with-time") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        bans.as_ref().clone()
                    } else if has(b"ping") {
                        reply(s("pong"))
                    } else if has(b"version") {
                        reply(s("1.0.2"))
                    } else if has(b"dbfile") {
                        reply(Py::None)
                    } else if has(b"short") {
                        reply(Py::List(vec![
                            pair(
                                "Filter",
                                Py::List(vec![
                                    pair("Currently failed", Py::Int(0)),
                                    pair("Total failed", Py::Int(0)),
                                    pair("File list", Py::List(vec![])),
                                ]),
                            ),
                            pair(
                                "Actions",
                                Py::List(vec![pair("Currently banned", Py::Int(0)), pair("Total banned", Py::Int(0))]),
                            ),
                        ]))
                    } else if has(b"status") {
                        reply(Py::List(vec![pair("Number of jail", Py::Int(1)), pair("Jail list", s("alpha"))]))
                    } else {
                        reply(s("unexpected"))
                    };
                    let _ = stream.write_all(&body);
                    let _ = stream.write_all(END);
                    // The client's goodbye, then the connection closes.
                    let _ = stream.read(&mut chunk);
                });
            }
        });
        Self { _dir: dir, socket, ban_requests }
    }

    fn socket_str(&self) -> String {
        self.socket.display().to_string()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_memo_amplification_reply_is_internal_and_memory_stays_small() {
    let fake = FakeFail2ban::start(memo_bomb());
    let control = ControlService::start(&["--fail2ban-socket", &fake.socket_str()]);
    let mut jails = control.jails().await;
    let before = control.peak_rss_kib();

    for round in 0..3 {
        let error = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap_err();
        assert_eq!(error.code(), Code::Internal, "round {round}: {error:?}");
        let error =
            jails.get_jail(pb::GetJailRequest { jail: "alpha".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(error.code(), Code::Internal, "round {round}: {error:?}");
        // Other RPCs still answer.
        let status =
            jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
        assert!(status.online && status.version == "1.0.2", "{status:?}");
        let list = jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(list.jails.len(), 1);
    }
    assert_eq!(fake.ban_requests.load(Ordering::SeqCst), 6, "each hostile reply was read");
    let logs = control.logs();
    assert_eq!(logs.iter().filter(|l| l.contains("reply decodes to more than")).count(), 6, "{logs:#?}");
    let peak = control.peak_rss_kib();
    println!(
        "memo amplification (1 MiB string x 16 777 216 references, 6 replies): VmHWM {:.1} MiB before, {:.1} MiB after",
        mib(before),
        mib(peak)
    );
    assert!(peak < 128 * 1024, "VmHWM {:.1} MiB", mib(peak));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_reply_of_100000_bans_decodes_in_proportional_memory() {
    let bans = honest_bans(100_000);
    let reply_bytes = bans.len();
    let fake = FakeFail2ban::start(bans);
    let control = ControlService::start(&["--fail2ban-socket", &fake.socket_str()]);
    let mut jails = control.jails().await.max_decoding_message_size(64 * 1024 * 1024);
    let before = control.peak_rss_kib();

    let listed = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(listed.bans.len(), 100_000);
    assert_eq!(listed.bans[0].ip, "10.0.0.0");
    assert_eq!(listed.bans[99_999].ip, "10.1.134.159");
    assert!(listed.bans.iter().all(|b| b.jail == "alpha" && b.ban_seconds == 3600));
    let after_one = control.peak_rss_kib();
    // Again: the peak does not grow with repeated calls.
    for _ in 0..2 {
        let again =
            jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(again.bans.len(), 100_000);
    }
    let peak = control.peak_rss_kib();
    println!(
        "honest reply: 100 000 bans, {:.1} MiB pickle: VmHWM {:.1} MiB before, {:.1} MiB after one ListActiveBans, {:.1} MiB after three",
        reply_bytes as f64 / (1024.0 * 1024.0),
        mib(before),
        mib(after_one),
        mib(peak)
    );
    assert!(peak < 256 * 1024, "VmHWM {:.1} MiB", mib(peak));
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `(ip, timeofban)` of fail2ban's database rows for `jail`.
async fn database_bans(f2b: &Fail2banServer, jail: &str) -> Vec<(String, i64)> {
    let url = format!("sqlite://{}?mode=ro", f2b.dir().join("run/f2b.sqlite3").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT ip, timeofban FROM bans WHERE jail = ?1 ORDER BY ip")
        .bind(jail)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_times_are_right_when_fail2ban_runs_in_another_time_zone() {
    let f2b = Fail2banServer::start_with(&Fail2banOptions {
        env: vec![("TZ".into(), "Asia/Tokyo".into())],
        ..Default::default()
    });
    let control = ControlService::start_with_env(
        &[("TZ", "UTC")],
        &["--fail2ban-socket", &f2b.socket_str(), "--lease-ttl", "2s", "--lease-retry", "200ms"],
    );
    let token = control.token().await;
    let mut jails = control.jails().await;
    // fail2ban prints Tokyo time.
    f2b.client_ok(&["set", "alpha", "banip", "192.0.2.1"]);
    let printed = f2b.client_ok(&["get", "alpha", "banip", "--with-time"]);
    let started = epoch_now();
    // A manual ban through the service.
    let banned = jails
        .ban_ip(pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.2".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(banned.into_inner().newly_banned);

    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = database_bans(&f2b, "alpha").await;
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (_, at) in &rows {
        assert!((at - started).abs() < 60, "database time {at}, now {started}");
    }
    // What fail2ban printed is 9 hours ahead of the database's UTC time
    // (printed floored, stored rounded: a second earlier at most).
    let tokyo = [chrono_like(&rows[0].1, 9 * 3600), chrono_like(&rows[0].1, 9 * 3600 - 1)];
    assert!(tokyo.iter().any(|t| printed.contains(t)), "fail2ban printed {printed:?}, Tokyo time of the ban {tokyo:?}");

    let detail =
        jails.get_jail(pb::GetJailRequest { jail: "alpha".into(), ..Default::default() }).await.unwrap().into_inner();
    let mut from_detail: Vec<(String, i64)> =
        detail.bans.iter().map(|b| (b.ip.clone(), b.banned_at.as_ref().unwrap().seconds)).collect();
    from_detail.sort();
    assert_eq!(from_detail, rows, "GetJail times equal fail2ban's database");
    assert!(
        detail
            .bans
            .iter()
            .all(|b| b.expires_at.as_ref().unwrap().seconds == b.banned_at.as_ref().unwrap().seconds + 3600)
    );
    let listed = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    let mut from_list: Vec<(String, i64)> =
        listed.bans.iter().map(|b| (b.ip.clone(), b.banned_at.as_ref().unwrap().seconds)).collect();
    from_list.sort();
    assert_eq!(from_list, rows, "ListActiveBans times equal fail2ban's database");

    // The manual ban is archived once, with the database's time, also after the sync.
    let mut cluster = control.cluster_with(&token).await;
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);
    let filter = Some(pb::HistoryFilter { window: pb::Window::Window24h.into(), ..Default::default() });
    for round in 0..2 {
        cluster.run_job_now(pb::RunJobNowRequest { job: "history_sync".into() }).await.unwrap();
        for _ in 0..100 {
            let archived = history
                .list_bans(pb::ListBansRequest { filter: filter.clone(), page_size: 100, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .bans;
            if archived.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give a second sync pass time to add a duplicate, if it would.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let archived = history
            .list_bans(pb::ListBansRequest { filter: filter.clone(), page_size: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .bans;
        let mut seen: Vec<(String, i64, String)> =
            archived.iter().map(|b| (b.ip.clone(), b.banned_at.as_ref().unwrap().seconds, b.origin.clone())).collect();
        seen.sort();
        let expected = vec![
            (rows[0].0.clone(), rows[0].1, "fail2ban".to_owned()),
            (rows[1].0.clone(), rows[1].1, "manual".to_owned()),
        ];
        assert_eq!(seen, expected, "round {round}: {archived:?}");
        let one = history
            .get_ip_history(pb::GetIpHistoryRequest { ip: "192.0.2.2".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.bans, 1, "round {round}: {one:?}");
    }
}

/// `at + offset` as `%Y-%m-%d %H:%M:%S` (UTC arithmetic, no time-zone crate).
fn chrono_like(at: &i64, offset: i64) -> String {
    let t = at + offset;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jails_with_names_users_cannot_type_are_listed() {
    let f2b = Fail2banServer::start_with(&Fail2banOptions {
        extra_jails: vec!["my jail".into(), "web+api".into()],
        ..Default::default()
    });
    let control = ControlService::start(&["--fail2ban-socket", &f2b.socket_str()]);
    let mut jails = control.jails().await;
    f2b.client_ok(&["set", "my jail", "banip", "198.51.100.7"]);
    f2b.client_ok(&["set", "web+api", "banip", "198.51.100.8"]);
    f2b.client_ok(&["set", "alpha", "banip", "198.51.100.9"]);

    let listed = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    let mut seen: Vec<(String, String)> = listed.bans.iter().map(|b| (b.jail.clone(), b.ip.clone())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("alpha".to_owned(), "198.51.100.9".to_owned()),
            ("my jail".to_owned(), "198.51.100.7".to_owned()),
            ("web+api".to_owned(), "198.51.100.8".to_owned()),
        ]
    );
    let names: Vec<String> = jails
        .list_jails(pb::ListJailsRequest { ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .jails
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["alpha", "beta", "my jail", "web+api"]);
    // What users send is still checked.
    let error = jails.get_jail(pb::GetJailRequest { jail: "my jail".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    // An unban of the address from every jail reaches the odd one too.
    let lifted = jails
        .unban_ip(pb::UnbanIpRequest { ip: "198.51.100.7".into(), jail: None, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(lifted.into_inner().unbanned, 1);
    assert!(f2b.banned("my jail").is_empty());
}
