//! Blocklist parsing benchmark (custom harness, DESIGN.md section 10).
//!
//! ```sh
//! cargo bench -p control-service --bench blocklist_parse
//! # another size (lines) or number of timed runs:
//! BANGUI_BENCH_LINES=500000 BANGUI_BENCH_RUNS=10 cargo bench -p control-service --bench blocklist_parse
//! ```
//!
//! It generates a list deterministically (200 000 lines by default: mostly
//! bare IPv4, 5 % IPv6, 3 % networks with a Spamhaus-style inline comment,
//! 1 % repeats of an earlier line, a `#` comment every 1 000 lines), then
//! times `parse` (CIDR policy `ban`), the same body fed to a `ListReader`
//! in 16 KiB pieces (as a download hands it over), `Exclusions::apply` (10
//! ignoreip words, 5 operator networks) and parse + apply together, and
//! prints the entries kept, the size of the entry vector and the process's
//! peak RSS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use control_service::{
    blocklist::{
        ImportCounts,
        parse::{Exclusions, ListReader, ParseLimits, parse},
    },
    kinds::CidrPolicy,
};
use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A list of `lines` lines, the same for the same seed.
fn synthetic_list(lines: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut body = String::with_capacity(lines * 16);
    let mut earlier: Vec<String> = Vec::new();
    for i in 0..lines {
        let line = if i % 1_000 == 0 {
            format!("# block {} of a generated list, updated 2024-01-01", i / 1_000)
        } else if rng.random_bool(0.01) && !earlier.is_empty() {
            earlier[rng.random_range(0..earlier.len())].clone()
        } else {
            let line = match rng.random_range(0..100) {
                0..=4 => {
                    Ipv6Addr::new(0x2a01, rng.random(), rng.random(), rng.random(), 0, 0, 0, rng.random()).to_string()
                }
                5..=7 => {
                    let len = rng.random_range(16..=24);
                    let net = IpNet::new(Ipv4Addr::from(rng.random::<u32>()).into(), len).unwrap().trunc();
                    format!("{net} ; SBL{}", rng.random_range(100_000..700_000))
                }
                _ => Ipv4Addr::from(rng.random::<u32>()).to_string(),
            };
            if earlier.len() < 10_000 {
                earlier.push(line.clone());
            }
            line
        };
        body.push_str(&line);
        body.push('\n');
    }
    body.into_bytes()
}

fn exclusions() -> Exclusions {
    let ignoreip: Vec<String> = [
        "127.0.0.1/8",
        "::1",
        "192.168.0.0/16",
        "203.0.113.5",
        "45.33.32.156",
        "81.2.0.0/16",
        "2a01:4f8::/32",
        "monitoring.example.com",
        "93.184.216.34",
        "198.51.100.0/24",
    ]
    .map(String::from)
    .into();
    let never_ban: Vec<IpNet> = ["8.8.8.0/24", "1.1.1.1/32", "9.9.9.9/32", "2606:4700::/32", "185.199.108.0/22"]
        .map(|t| t.parse().unwrap())
        .into();
    Exclusions::new(&ignoreip, &never_ban)
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    (ms(samples[0]), ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1]))
}

fn time<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) {
    std::hint::black_box(f()); // warm up
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed()
        })
        .collect();
    let (min, median, max) = stats(samples);
    println!("{label:<28} median {median:>8.2} ms  min {min:>8.2} ms  max {max:>8.2} ms  ({runs} runs)");
}

/// The process's peak resident set (VmHWM), as Linux reports it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l[6..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to run there
    }
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let lines = env("BANGUI_BENCH_LINES", 200_000);
    let runs = env("BANGUI_BENCH_RUNS", 30);
    let limits = ParseLimits::new(CidrPolicy::Ban, 1_000_000);

    let body = synthetic_list(lines, 7);
    println!("{lines} lines, {:.1} MiB; peak RSS after generating: {}", body.len() as f64 / 1_048_576.0, peak_rss());

    let exclusions = exclusions();
    let parsed = parse(&body, &limits).unwrap();
    let mut counts = parsed.counts;
    let entries = parsed.entries.clone();
    let mut kept = parsed.entries.clone();
    exclusions.apply(&mut kept, &mut counts);
    print_counts(&counts, kept.len(), &parsed.entries);
    println!("peak RSS after one parse: {}", peak_rss());

    time("parse", runs, || parse(&body, &limits).unwrap());
    time("ListReader, 16 KiB pieces", runs, || {
        let mut reader = ListReader::new(limits);
        for piece in body.chunks(16 * 1024) {
            reader.feed(piece).unwrap();
        }
        reader.finish().unwrap()
    });
    time("Exclusions::apply", runs, || {
        let mut entries = entries.clone();
        exclusions.apply(&mut entries, &mut ImportCounts::default());
        entries
    });
    time("parse + Exclusions::apply", runs, || {
        let parsed = parse(&body, &limits).unwrap();
        let (mut entries, mut counts) = (parsed.entries, parsed.counts);
        exclusions.apply(&mut entries, &mut counts);
        entries
    });
    println!("peak RSS after all runs: {}", peak_rss());
}

fn print_counts(counts: &ImportCounts, kept: usize, entries: &[IpNet]) {
    println!(
        "valid {} (peak of entries), duplicate {}, invalid {}, reserved {}, ignored {}, never_ban {}, kept {kept}",
        counts.valid, counts.duplicate, counts.invalid, counts.reserved, counts.ignored, counts.never_ban
    );
    println!(
        "entry vector: {} entries x {} bytes = {:.1} MiB",
        entries.len(),
        size_of::<IpNet>(),
        size_of_val(entries) as f64 / 1_048_576.0
    );
}
