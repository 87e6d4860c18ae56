//! A PostgreSQL cluster of a test's own, so the test can stop and restart
//! the server under the services: `initdb` and `pg_ctl` of the installed
//! server (Debian's `/usr/lib/postgresql/<version>/bin`, or
//! `BANGUI_PG_BIN`), in a temporary directory, listening on 127.0.0.1 on a
//! free port, trust authentication, user `postgres`, database `postgres`.
//! initdb refuses to run as root: as root, every command runs as the
//! `postgres` user (`runuser -u postgres --`) in a directory it owns.
//! Dropping the value stops the server (`pg_ctl stop -m immediate`) and
//! removes the directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// How `pg_ctl stop` ends the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects every client, rolls back, checkpoints (`-m fast`).
    Fast,
    /// Quits at once, like a crash; recovery at the next start (`-m immediate`).
    Immediate,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running (or stopped) PostgreSQL cluster in a temporary directory.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// The TCP port, kept across restarts.
    pub port: u16,
}

impl PgCluster {
    /// initdb, then starts the server on a free port.
    pub fn start() -> Self {
        let bin = server_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("bangui-pg").tempdir().unwrap();
        if as_postgres {
            let out = Command::new("chown").arg("postgres:postgres").arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "chown postgres {}: {}", dir.path().display(), text(&out));
        }
        let mut cluster = Self { dir, bin, as_postgres, port: 0 };
        let data = cluster.data();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // The port is free when asked; another process could take it before
        // the server binds it, so a failed start tries another one.
        let mut attempts = Vec::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(error) => attempts.push(error),
            }
        }
        panic!("PostgreSQL did not start: {attempts:#?}\nserver log:\n{}", cluster.log());
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&self, mode: StopMode) {
        let data = self.data();
        let out = self.run("pg_ctl", &["-D", &data, "-m", mode.flag(), "-w", "-t", "30", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}\nserver log:\n{}", text(&out), self.log());
    }

    /// Starts the stopped server again, on the same port, and waits until
    /// it accepts connections.
    pub fn restart(&self) {
        if let Err(error) = self.try_start() {
            panic!("PostgreSQL did not start again: {error}\nserver log:\n{}", self.log());
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn try_start(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.path().join("server.log").display().to_string();
        // The socket goes into the cluster's directory too, so nothing is
        // shared with the machine's own server.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30", "start"]);
        if out.status.success() { Ok(()) } else { Err(text(&out)) }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a server program, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(self.dir.path());
        command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        if Path::new(&data).join("postmaster.pid").exists() {
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"]);
        }
        // The TempDir then removes the directory (root may remove what postgres owns).
    }
}

/// The directory of `initdb` and `pg_ctl`.
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGUI_PG_BIN") {
        return PathBuf::from(dir);
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("pg_ctl").exists() {
        return preferred;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server programs (initdb, pg_ctl) in /usr/lib/postgresql/*/bin: \
             install Debian's postgresql-15, or set BANGUI_PG_BIN"
        )
    })
}

/// Whether this process runs as root (initdb refuses to).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("Uid:").map(|ids| ids.split_whitespace().nth(1) == Some("0")))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
