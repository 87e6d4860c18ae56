//! The `fake-fail2ban` binary as fail2ban's own client sees it: the real
//! `fail2ban-client` (Python) talks to it over its socket. (Being here
//! also makes `cargo nextest run --workspace` build the binary for the
//! end-to-end tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

struct Fake {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn start(name: &str) -> Fake {
    let socket = std::env::temp_dir().join(format!("fake-f2b-{name}-{}.sock", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_fake-fail2ban"))
        .arg("--socket")
        .arg(&socket)
        .args(["--jail", "blocklist-import=-1", "--jail", "sshd"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "fake-fail2ban did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    Fake { child, socket }
}

fn client(fake: &Fake, args: &[&str]) -> (bool, String) {
    let out = Command::new("fail2ban-client").arg("-s").arg(&fake.socket).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn fail2ban_client_talks_to_it() {
    if Command::new("fail2ban-client").arg("--version").output().is_err() {
        panic!("fail2ban-client is missing: install Debian's `fail2ban` package (.ci/run does)");
    }
    let fake = start("client");
    assert_eq!(client(&fake, &["ping"]), (true, "Server replied: pong\n".into()));
    let (ok, status) = client(&fake, &["status"]);
    assert!(
        ok && status.contains("Number of jail:\t2") && status.contains("Jail list:\tblocklist-import, sshd"),
        "{status}"
    );
    let (ok, banned) = client(&fake, &["set", "blocklist-import", "banip", "192.0.2.1", "2001:db8::/32", "192.0.2.1"]);
    assert!(ok && banned.trim() == "2", "{banned}");
    let (ok, list) = client(&fake, &["get", "blocklist-import", "banip"]);
    assert!(ok && list.trim() == "192.0.2.1 2001:db8::/32", "{list}");
    let (ok, bantime) = client(&fake, &["get", "blocklist-import", "bantime"]);
    assert!(ok && bantime.trim() == "-1", "{bantime}");
    let (ok, error) = client(&fake, &["get", "nope", "banip"]);
    assert!(!ok && error.contains("UnknownJailException") || error.contains("nope"), "{error}");
    assert!(client(&fake, &["stop"]).0);
}
