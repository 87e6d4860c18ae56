//! History archive benchmarks (custom harness) and the synthetic data
//! generator (DESIGN.md section 7).
//!
//! ```sh
//! # SQLite (a temporary file), 10 000 bans:
//! BANGUI_BENCH_ROWS=10000 cargo bench -p control-service --bench history
//! # PostgreSQL (a fresh schema in the test database), 1 000 000 bans:
//! BANGUI_BENCH_ROWS=1000000 BANGUI_BENCH_BACKEND=postgres cargo bench -p control-service --bench history
//! ```
//!
//! With `BANGUI_BENCH_SEED_DB=PATH` it only fills the SQLite database at
//! PATH (a control database the release control-service can then serve;
//! `bench/transport.sh` does this) and exits.
//!
//! It fills the archive with N realistic bans (a jail mix, 80 % IPv4,
//! countries weighted like real attack sources, a year of time with recent
//! days denser, a few manual and blocklist bans), then times BansByCountry
//! (all time and 30 days), one ListBans page (first and deep), and the sync
//! of 100 000 new rows from a fail2ban database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bangui_fail2ban::{Fail2ban, SocketClient, SocketSettings, StartSettings, Unobserved};
use bangui_testkit::postgres::PgSchema;
use control_service::{
    clock::{Clock, SystemClock},
    geo_client::GeoClient,
    history::{History, SyncOutcome},
    kinds::{Event, Origin},
    settings::{RuntimeSettings, SettingsUpdate},
    store::{
        PgStore, SqliteStore, Stores,
        history::{ArchivedBan, HistoryFilter},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const COUNTRIES: &[(&str, &str, u32)] = &[
    ("CN", "China", 22),
    ("US", "United States", 14),
    ("RU", "Russia", 9),
    ("IN", "India", 6),
    ("BR", "Brazil", 6),
    ("DE", "Germany", 5),
    ("VN", "Vietnam", 5),
    ("KR", "South Korea", 4),
    ("NL", "Netherlands", 4),
    ("FR", "France", 3),
    ("ID", "Indonesia", 3),
    ("GB", "United Kingdom", 3),
    ("SG", "Singapore", 2),
    ("TW", "Taiwan", 2),
    ("UA", "Ukraine", 2),
    ("IR", "Iran", 2),
    ("AR", "Argentina", 1),
    ("MX", "Mexico", 1),
    ("TR", "Turkey", 1),
    ("JP", "Japan", 1),
    ("", "", 4),
];
const JAILS: &[(&str, u32)] =
    &[("sshd", 60), ("nginx-http-auth", 15), ("postfix-sasl", 10), ("recidive", 10), ("dovecot", 5)];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut n = rng.random_range(0..total);
    for item in items {
        let w = weight(item);
        if n < w {
            return item;
        }
        n -= w;
    }
    &items[0]
}

/// N synthetic bans over the year before `now`.
pub fn synthetic_bans(n: usize, now: i64, seed: u64) -> Vec<ArchivedBan> {
    let mut rng = StdRng::seed_from_u64(seed);
    // A pool of repeat offenders: about a third of the bans come from 2 % of the addresses.
    let repeat: Vec<String> = (0..(n / 50).max(1)).map(|_| random_ip(&mut rng)).collect();
    (0..n)
        .map(|_| {
            let (code, name, _) = *pick(&mut rng, COUNTRIES, |c| c.2);
            let (jail, _) = *pick(&mut rng, JAILS, |j| j.1);
            // Recent days denser: the square of a uniform number leans to 0.
            let age = (rng.random::<f64>().powi(2) * 365.0 * 86_400.0) as i64;
            let ip = if rng.random_bool(0.33) {
                repeat[rng.random_range(0..repeat.len())].clone()
            } else {
                random_ip(&mut rng)
            };
            let origin = match rng.random_range(0..100) {
                0..=1 => Origin::Manual,
                2..=6 => Origin::Blocklist,
                _ => Origin::Fail2ban,
            };
            ArchivedBan {
                id: 0,
                host: "local".into(),
                jail: jail.into(),
                ip,
                banned_at: now - age,
                ban_seconds: if jail == "recidive" { 604_800 } else { 600 },
                ban_count: 1,
                origin,
                event: Event::Ban,
                failures: rng.random_range(3..10),
                matches: r#"["sshd[1234]: Failed password for root"]"#.into(),
                country_code: Some(code.into()),
                country_name: Some(name.into()),
                asn: Some(i64::from(rng.random_range(1000u32..65000))),
                as_org: Some("Example AS".into()),
                archived_at: now - age + 60,
                source: None,
            }
        })
        .collect()
}

fn random_ip(rng: &mut StdRng) -> String {
    if rng.random_bool(0.8) {
        format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1..255)
        )
    } else {
        format!("2001:db8:{:x}:{:x}::{:x}", rng.random::<u16>(), rng.random::<u16>(), rng.random::<u16>())
    }
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    (samples[0], samples[samples.len() / 2], samples[samples.len() - 1])
}

async fn time<F, Fut, T>(label: &str, runs: usize, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    f().await; // warm the cache
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await;
        samples.push(started.elapsed());
    }
    let (min, med, max) = median(samples);
    println!("{label:<44} min {min:>10.3?}  median {med:>10.3?}  max {max:>10.3?}  ({runs} runs)");
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to run there
    }
    let rows: usize = std::env::var("BANGUI_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let backend = std::env::var("BANGUI_BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let dir = tempfile::tempdir().unwrap();
    let mut _schema = None;
    let stores = if backend == "postgres" {
        let schema = PgSchema::create("bench_history").await;
        let store = PgStore::connect_with(schema.options()).await.unwrap();
        _schema = Some(schema);
        Stores::of(store)
    } else {
        let path = match std::env::var_os("BANGUI_BENCH_SEED_DB") {
            Some(path) => std::path::PathBuf::from(path),
            None => dir.path().join("bench.db"),
        };
        let url = format!("sqlite://{}", path.display());
        Stores::of(SqliteStore::connect(&url).await.unwrap())
    };
    let store = stores.history.clone();
    let now = SystemClock.now();
    println!("backend {backend}, {rows} bans");

    let started = Instant::now();
    for (i, chunk) in synthetic_bans(rows, now, 7).chunks(50_000).enumerate() {
        store.archive(chunk).await.unwrap();
        if i % 4 == 3 {
            eprintln!("  {} rows…", (i + 1) * 50_000);
        }
    }
    let took = started.elapsed();
    println!("generated and archived in {took:.2?} ({:.0} rows/s)", rows as f64 / took.as_secs_f64());
    if std::env::var_os("BANGUI_BENCH_SEED_DB").is_some() {
        stores.pool.close().await;
        return;
    }
    if backend == "postgres" {
        // What autovacuum does on a live database after a bulk load: fresh
        // statistics and the visibility map index-only scans rely on.
        if let Some(schema) = &_schema {
            let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
            sqlx::query("VACUUM ANALYZE ban_history").execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    let all = HistoryFilter::default();
    let month = HistoryFilter { from: Some(now - 30 * 86_400), ..Default::default() };
    time("BansByCountry, all time", 10, || store.by_country(&all)).await;
    time("BansByCountry, 30 days", 10, || store.by_country(&month)).await;
    time("ListBans first page (100), all time", 50, || store.page(&all, None, 101)).await;
    let deep = store.page(&all, None, 5001).await.unwrap();
    let cursor = deep.last().map(|r| (r.banned_at, r.id));
    time("ListBans page 50 (100), all time", 50, || store.page(&all, cursor, 101)).await;
    let sshd = HistoryFilter { jail: Some("sshd".into()), country: Some("CN".into()), ..Default::default() };
    time("ListBans first page, jail+country filter", 50, || store.page(&sshd, None, 101)).await;
    time("BanTrend, 365 days by week", 10, || store.trend(&all, now - 365 * 86_400, 7 * 86_400)).await;
    time("TopIps 10, all time", 5, || store.top_ips(&all, 10)).await;

    // The sync of 100 000 new rows from a fail2ban database file.
    let f2b_path = dir.path().join("fail2ban.sqlite3");
    let f2b = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", f2b_path.display())).await.unwrap();
    sqlx::query(
        "CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, \
         bancount INTEGER NOT NULL default 1, data JSON)",
    )
    .execute(&f2b)
    .await
    .unwrap();
    let new_rows = synthetic_bans(100_000, now, 11);
    let mut tx = f2b.begin().await.unwrap();
    for r in &new_rows {
        sqlx::query("INSERT INTO bans VALUES (?, ?, ?, ?, 1, ?)")
            .bind(&r.jail)
            .bind(&r.ip)
            .bind(now - (now - r.banned_at) / 60) // within the last 6 days: inside the backfill window
            .bind(r.ban_seconds)
            .bind(r#"{"matches": [["2026-11-23 ", "sshd: auth failure"]], "failures": 4}"#)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    f2b.close().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = RuntimeSettings::new(stores.settings.clone(), clock.clone());
    settings
        .update(&SettingsUpdate { history_backfill: Some(Duration::from_secs(7 * 86_400)), ..Default::default() })
        .await
        .unwrap();
    let socket = SocketClient::new(
        SocketSettings {
            path: dir.path().join("none.sock"),
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(1),
            max_in_flight: 1,
        },
        Arc::new(Unobserved),
    );
    let fail2ban = Fail2ban::new(
        socket,
        StartSettings { client_binary: "fail2ban-client".into(), config_dir: None, timeout: Duration::from_secs(1) },
    );
    let geo = GeoClient::new(None, Duration::from_secs(1), Duration::from_secs(5), None, None).unwrap();
    let history = History::new(store.clone(), fail2ban.with_database(Some(f2b_path)), geo, settings, clock);
    let started = Instant::now();
    let SyncOutcome::Synced(report) = history.sync().await.unwrap() else { panic!("the sync was skipped") };
    let took = started.elapsed();
    println!(
        "sync of {} new fail2ban rows (no geo-service): {took:.2?}, {:.0} rows/s, {} archived",
        report.read,
        report.read as f64 / took.as_secs_f64(),
        report.archived
    );
    let started = Instant::now();
    let SyncOutcome::Synced(again) = history.sync().await.unwrap() else { panic!("the sync was skipped") };
    println!(
        "second sync: {} re-checked, {} read, {} archived, {:.2?}",
        again.rechecked,
        again.read,
        again.archived,
        started.elapsed()
    );
}
