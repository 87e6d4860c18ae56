//! Reading every ban of a jail (`Fail2ban::jail_bans`, `get <jail> banip`)
//! at 1 000 000 full-length IPv6 bans, what it costs this process:
//!
//! 1. the decoder alone, fed a reply pickled exactly as fail2ban 1.0.2
//!    does (testkit's pickler), generated a frame at a time;
//! 2. `Fail2ban::jail_bans` over a real socket, against `fake-fail2ban`
//!    (a fail2ban that answers at once; real fail2ban takes 8 s just to
//!    build this reply). Build it first in the same profile:
//!    `cargo build --release -p bangui-testkit --bin fake-fail2ban`.
//!
//! Peak memory is VmHWM of this process, reset before each part (Linux:
//! `5` to `/proc/self/clear_refs`), minus VmRSS at that moment.
//!
//! `cargo bench -p control-service --bench ban_list`;
//! `BANGUI_BENCH_BANS` sets the number of bans (default 1 000 000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io::Write, path::PathBuf, sync::Arc, time::Instant};

use bangui_fail2ban::{
    Fail2ban, JailName, SocketClient, SocketSettings, StartSettings, Unobserved,
    banlist::{BanListDecoder, BanListReply, Fed},
};
use bangui_testkit::pickle::{END, write_ban_list_reply};

/// The `i`-th of `count` full-length IPv6 addresses (39 characters),
/// distinct, in no order (fail2ban lists bans by when they end).
fn ban(i: usize, count: usize) -> String {
    // 7 919 is prime and divides no count made of 2s and 5s: a permutation.
    let j = (i * 7919) % count.max(1);
    format!("2a02:c7d1:{:x}:{:x}:abcd:ef01:2345:6789", (j >> 12) + 0x1000, (j & 0xfff) + 0x1000)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak; returns the resident set now (KiB).
fn reset_peak() -> u64 {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        println!("(cannot reset VmHWM: the peaks below include earlier parts)");
    }
    status_kib("VmRSS:")
}

fn peak_growth_mib(baseline_kib: u64) -> f64 {
    status_kib("VmHWM:").saturating_sub(baseline_kib) as f64 / 1024.0
}

struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Feeder(BanListDecoder, Fed);

impl Write for Feeder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks(32 * 1024) {
            self.1 = self.0.feed(chunk).map_err(std::io::Error::other)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decoder_alone(count: usize) {
    let started = Instant::now();
    let mut counter = Counter(0);
    write_ban_list_reply(count, |i| ban(i, count), &mut counter).unwrap();
    let generating = started.elapsed();

    let baseline = reset_peak();
    let started = Instant::now();
    let mut feeder = Feeder(BanListDecoder::new(), Fed::More);
    write_ban_list_reply(count, |i| ban(i, count), &mut feeder).unwrap();
    feeder.write_all(END).unwrap();
    assert_eq!(feeder.1, Fed::Done);
    let both = started.elapsed();
    let Ok(BanListReply::Bans(bans)) = feeder.0.finish() else { panic!("decode") };
    let sorting = Instant::now();
    let bans = bans.normalize();
    let sorting = sorting.elapsed();
    assert_eq!(bans.bans.len(), count);
    println!(
        "decoder alone: {count} bans, {:.1} MB reply; decode {:.0} ms ({:.0} ms generating and decoding, \
         {:.0} ms generating alone), sort {:.0} ms; peak +{:.1} MiB",
        counter.0 as f64 / 1e6,
        both.saturating_sub(generating).as_secs_f64() * 1e3,
        both.as_secs_f64() * 1e3,
        generating.as_secs_f64() * 1e3,
        sorting.as_secs_f64() * 1e3,
        peak_growth_mib(baseline),
    );
}

fn over_the_socket(count: usize) {
    let fake_path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("fake-fail2ban")))
        .filter(|p| p.exists());
    if fake_path.is_none() {
        println!("over the socket: skipped, build fake-fail2ban first (see the top of benches/ban_list.rs)");
        return;
    }
    let fake = bangui_e2e::fake_fail2ban::FakeFail2ban::start(&["blocklist-import=-1"]);
    let started = Instant::now();
    let per_command = 10_000;
    let mut newly = 0;
    for from in (0..count).step_by(per_command) {
        let chunk: Vec<String> = (from..(from + per_command).min(count)).map(|i| ban(i, count)).collect();
        newly += fake.ban("blocklist-import", &chunk, per_command);
    }
    assert_eq!(newly, count as u64);
    println!("over the socket: {count} bans sent to fake-fail2ban in {:.1} s", started.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let settings = SocketSettings {
        path: fake.socket(),
        connect_timeout: std::time::Duration::from_secs(2),
        reply_timeout: std::time::Duration::from_secs(10),
        max_in_flight: 4,
    };
    let start = StartSettings {
        client_binary: PathBuf::from("fail2ban-client"),
        config_dir: None,
        timeout: std::time::Duration::from_secs(30),
    };
    let fail2ban = Fail2ban::new(SocketClient::new(settings, Arc::new(Unobserved)), start);
    let jail = JailName::parse("jail", "blocklist-import").unwrap();
    let baseline = reset_peak();
    let started = Instant::now();
    let bans = runtime.block_on(fail2ban.jail_bans(&jail)).unwrap();
    let took = started.elapsed();
    assert_eq!((bans.bans.len(), bans.unreadable), (count, 0));
    drop(bans);
    println!(
        "Fail2ban::jail_bans: {count} bans in {:.0} ms; peak +{:.1} MiB",
        took.as_secs_f64() * 1e3,
        peak_growth_mib(baseline)
    );
    // Later runs reuse the memory the first one freed: time only.
    let runs: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            runtime.block_on(fail2ban.jail_bans(&jail)).unwrap();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // fake-fail2ban's own part: the same reply, only received.
    let started = Instant::now();
    let reply = fake.raw(&["get", "blocklist-import", "banip"]);
    let raw = started.elapsed();
    println!(
        "Fail2ban::jail_bans, 3 more runs: {:.0} / {:.0} / {:.0} ms; the {:.1} MB reply alone \
         (fake-fail2ban building it, received whole): {:.0} ms",
        runs[0],
        runs[1],
        runs[2],
        reply.len() as f64 / 1e6,
        raw.as_secs_f64() * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to run there
    }
    let count = std::env::var("BANGUI_BENCH_BANS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    decoder_alone(count);
    over_the_socket(count);
}
