//! A fail2ban that answers at once (testkit's `fake-fail2ban`, see
//! `bangui_testkit::fake_fail2ban`), started like
//! [`crate::fail2ban::Fail2banServer`]: its socket in a temporary directory,
//! stopped when dropped. For measuring our side at sizes real fail2ban is
//! far too slow for (1 000 000 bans); its replies are fail2ban 1.0.2's byte
//! for byte (`tests/control_fake_fail2ban.rs` compares them).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bangui_testkit::pickle::{self, CLOSE, END};

/// A running fake fail2ban. Killed when dropped.
#[derive(Debug)]
pub struct FakeFail2ban {
    dir: tempfile::TempDir,
    child: Child,
}

impl FakeFail2ban {
    /// Starts it with `jails`, each `NAME` (bantime 600) or `NAME=BANTIME`
    /// (e.g. `blocklist-import=-1`); returns once it answers `ping`.
    pub fn start(jails: &[&str]) -> Self {
        Self::start_with(jails, None)
    }

    /// [`FakeFail2ban::start`], answering `get dbfile` with `dbfile`.
    pub fn start_with(jails: &[&str], dbfile: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("fakef2b").tempdir().unwrap();
        let socket = dir.path().join("f2b.sock");
        let mut command = Command::new(crate::binary("fake-fail2ban"));
        command.arg("--socket").arg(&socket);
        for jail in jails {
            command.args(["--jail", jail]);
        }
        if let Some(dbfile) = dbfile {
            command.args(["--dbfile", dbfile]);
        }
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
        let fake = Self { dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(fake.socket().exists() && exchange(&fake.socket(), &["ping"]).is_ok()) {
            assert!(Instant::now() < deadline, "fake-fail2ban did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        fake
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("f2b.sock")
    }

    pub fn socket_str(&self) -> String {
        self.socket().display().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One command; the reply's pickle (without the end marker).
    pub fn raw(&self, args: &[&str]) -> Vec<u8> {
        exchange(&self.socket(), args).unwrap()
    }

    /// Bans `ips` in `jail`, `per_command` to a `banip`; returns how many
    /// were newly banned.
    pub fn ban(&self, jail: &str, ips: &[String], per_command: usize) -> u64 {
        let mut newly = 0;
        for chunk in ips.chunks(per_command.max(1)) {
            let mut args = vec!["set", jail, "banip"];
            args.extend(chunk.iter().map(String::as_str));
            let reply = self.raw(&args);
            newly += reply_int(&reply).unwrap_or_else(|| panic!("banip answered {reply:?}"));
        }
        newly
    }
}

impl Drop for FakeFail2ban {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one command to a fail2ban socket (real or fake) as
/// fail2ban-client does and returns the reply's pickle, end marker
/// removed.
pub fn exchange(socket: &Path, args: &[&str]) -> std::io::Result<Vec<u8>> {
    exchange_bytes(socket, &pickle::request(args))
}

/// [`exchange`] of a request given as bytes (end marker included).
pub fn exchange_bytes(socket: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(request)?;
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while !reply.ends_with(END) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the end marker"));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    reply.truncate(reply.len() - END.len());
    let mut close = CLOSE.to_vec();
    close.extend_from_slice(END);
    let _ = stream.write_all(&close);
    Ok(reply)
}

/// The `n` of a `(0, n)` reply with a non-negative `n` (as fail2ban
/// pickles it: `BININT1`, `BININT2` or `BININT` after `BININT1 0`).
pub fn reply_int(reply: &[u8]) -> Option<u64> {
    let at = reply.windows(2).position(|w| w == b"K\x00")? + 2;
    let rest = reply.get(at..)?;
    match rest.first()? {
        b'K' => Some(u64::from(*rest.get(1)?)),
        b'M' => Some(u64::from(u16::from_le_bytes(rest.get(1..3)?.try_into().ok()?))),
        b'J' => u64::try_from(i32::from_le_bytes(rest.get(1..5)?.try_into().ok()?)).ok(),
        _ => None,
    }
}
