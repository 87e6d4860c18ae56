//! The memory one download and read of the largest list a source may have
//! costs: 64 MiB of body, 1 000 000 IPv6 addresses, served by a real HTTP
//! server over loopback.
//!
//! The server runs in this test's process and holds the whole body; the
//! download and the parse run in a child process (this test binary again,
//! running only the ignored `child_downloads_and_reads_the_list`), so that
//! the child's peak resident set (VmHWM in `/proc/self/status`) is the cost
//! of the download and the parse alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, time::Duration};

use bangui_testkit::list_server::ListServer;
use control_service::{
    blocklist::{
        MAX_MAX_BYTES, MAX_MAX_ENTRIES,
        fetch::{FetchSettings, Fetched, Fetcher, Validators},
        parse::ParseLimits,
    },
    kinds::CidrPolicy,
};

/// Where the child downloads from (set only for the child).
const CHILD_URL: &str = "BANGUI_BLOCKLIST_MEMORY_URL";
const ADDRESSES: u32 = 1_000_000;

/// 1 000 000 distinct IPv6 addresses, written in full with an inline
/// comment: 67 bytes a line, 63.9 MiB in all (just under the 64 MiB cap).
fn largest_list() -> Vec<u8> {
    let mut body = Vec::with_capacity(67 * ADDRESSES as usize);
    for i in 0..ADDRESSES {
        let line = format!("2a01:04f8:{:04x}:{:04x}:0000:0000:0000:0001 ; listed-{i:017}\n", i >> 16, i & 0xffff);
        body.extend_from_slice(line.as_bytes());
    }
    assert!(body.len() as u64 <= MAX_MAX_BYTES, "{} bytes", body.len());
    body
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloading_and_reading_the_largest_list_keeps_memory_small() {
    let server = ListServer::start().await;
    server.set("largest.txt", largest_list());
    let url = server.url("largest.txt");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(std::env::current_exe().unwrap())
            .args(["child_downloads_and_reads_the_list", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_URL, url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed:\n{stdout}\n{stderr}");
    let value = |key: &str| -> u64 {
        let prefix = format!("{key}=");
        stdout
            .lines()
            .flat_map(str::split_whitespace)
            .find_map(|word| word.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key} in the child's output:\n{stdout}\n{stderr}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (peak, before, entries) = (value("peak_kib"), value("start_kib"), value("entries"));
    eprintln!(
        "download + parse of 63.9 MiB / 1 000 000 IPv6: peak RSS {} MiB (the process before it: {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert_eq!(entries, u64::from(ADDRESSES));
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB is over 48 MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of downloading_and_reading_the_largest_list_keeps_memory_small"]
async fn child_downloads_and_reads_the_list() {
    let Ok(url) = std::env::var(CHILD_URL) else { return };
    println!("start_kib={}", vm_hwm_kib());
    let settings = FetchSettings { timeout: Duration::from_secs(60), allow_private: true, ..FetchSettings::default() };
    let fetcher = Fetcher::new(settings).unwrap();
    let limits = ParseLimits::new(CidrPolicy::Ban, MAX_MAX_ENTRIES as usize);
    let fetched = fetcher.fetch(&url, MAX_MAX_BYTES, &Validators::default(), &limits).await.unwrap();
    let Fetched::Body(download) = fetched else { panic!("no body") };
    assert_eq!(download.bytes, 67 * u64::from(ADDRESSES));
    println!("entries={}", download.parsed.entries.len());
    println!("peak_kib={}", vm_hwm_kib());
}
