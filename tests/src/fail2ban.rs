//! A real fail2ban-server (Debian's `fail2ban` package) in a temporary
//! directory of its own: own configuration, socket, pid file and database,
//! `banaction = dummy` writing into the directory (no firewall is touched),
//! and two jails, `alpha` (maxretry 3) and `beta` (maxretry 5), reading
//! log files in the directory.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The jails the test server runs.
pub const JAILS: [&str; 2] = ["alpha", "beta"];

/// How to start the test server beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Fail2banOptions {
    /// Environment of the server process (e.g. `("TZ", "Asia/Tokyo")`).
    pub env: Vec<(String, String)>,
    /// More jails, like `alpha` (any name fail2ban accepts, e.g. `my jail`);
    /// each reads its own log file `<n>.log` (its index among these).
    pub extra_jails: Vec<String>,
    /// fail2ban's `dbfile` (e.g. `:memory:`) instead of `run/f2b.sqlite3`.
    pub dbfile: Option<String>,
    /// Also run the `blocklist-import` jail from the deploy file
    /// (`deploy/fail2ban/jail.d/blocklist-import.conf`, as shipped), with a
    /// `.local` that gives it the test filter and a log
    /// (`blocklist-import.log`), so a log ban can land in it too.
    pub blocklist_jail: bool,
    /// The `blocklist-import` jail runs no ban action (fail2ban only keeps
    /// the ban): for imports of many addresses, where the per-address
    /// action (a shell each, with `dummy`) would dominate.
    pub blocklist_without_action: bool,
}

/// The blocklist jail's name (see [`Fail2banOptions::blocklist_jail`]).
pub const BLOCKLIST_JAIL: &str = "blocklist-import";

/// A running fail2ban-server. Stopped when dropped.
#[derive(Debug)]
pub struct Fail2banServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// The jail list `status` shows once the server is up.
    wanted: &'static str,
}

impl Fail2banServer {
    /// Writes the configuration and starts the server; returns once it
    /// answers `ping` with both jails up. Its database is `run/f2b.sqlite3`
    /// ([`Fail2banServer::database`]).
    pub fn start() -> Self {
        Self::start_with(&Fail2banOptions::default())
    }

    /// [`Fail2banServer::start`] with fail2ban's `dbfile` set to `dbfile`
    /// (e.g. `:memory:`: no database file) instead of the default.
    pub fn start_with_dbfile(dbfile: Option<&str>) -> Self {
        Self::start_with(&Fail2banOptions { dbfile: dbfile.map(str::to_owned), ..Fail2banOptions::default() })
    }

    /// [`Fail2banServer::start`] with `options`.
    pub fn start_with(options: &Fail2banOptions) -> Self {
        assert!(
            Command::new("fail2ban-server").arg("--version").output().is_ok_and(|o| o.status.success()),
            "fail2ban-server is missing: install Debian's `fail2ban` package (.ci/run does)"
        );
        let dir = tempfile::Builder::new().prefix("f2b").tempdir().unwrap();
        let root = dir.path();
        for sub in ["conf/filter.d", "conf/action.d", "conf/jail.d", "run"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy("/etc/fail2ban/action.d/dummy.conf", root.join("conf/action.d/dummy.conf")).unwrap();
        std::fs::write(
            root.join("conf/fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {root}/fail2ban.log\nsocket = {root}/run/f2b.sock\n\
                 pidfile = {root}/run/f2b.pid\ndbfile = {dbfile}\ndbpurgeage = 1d\n",
                root = root.display(),
                dbfile = options.dbfile.clone().unwrap_or_else(|| root.join("run/f2b.sqlite3").display().to_string()),
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("conf/filter.d/bangui-test.conf"),
            "[Definition]\nfailregex = ^\\s*\\S+ auth failure from <HOST>$\nignoreregex =\n",
        )
        .unwrap();
        for jail in JAILS {
            std::fs::write(root.join(format!("{jail}.log")), "").unwrap();
        }
        let mut jails = format!(
            "[DEFAULT]\nbanaction = dummy\naction = dummy[target={root}/run/dummy.txt]\nbackend = polling\n\
             maxretry = 3\nfindtime = 10m\nbantime = 1h\n\n\
             [alpha]\nenabled = true\nfilter = bangui-test\nlogpath = {root}/alpha.log\n\n\
             [beta]\nenabled = true\nfilter = bangui-test\nlogpath = {root}/beta.log\nmaxretry = 5\n",
            root = root.display()
        );
        for (i, name) in options.extra_jails.iter().enumerate() {
            std::fs::write(root.join(format!("{i}.log")), "").unwrap();
            jails.push_str(&format!(
                "\n[{name}]\nenabled = true\nfilter = bangui-test\nlogpath = {root}/{i}.log\n",
                root = root.display()
            ));
        }
        std::fs::write(root.join("conf/jail.conf"), jails).unwrap();
        if options.blocklist_jail {
            let shipped = crate::workspace_root().join("deploy/fail2ban/jail.d/blocklist-import.conf");
            std::fs::copy(&shipped, root.join("conf/jail.d/blocklist-import.conf")).unwrap();
            std::fs::write(root.join("blocklist-import.log"), "").unwrap();
            std::fs::write(
                root.join("conf/jail.d/blocklist-import.local"),
                format!(
                    "[{BLOCKLIST_JAIL}]\nfilter = bangui-test\nlogpath = {}/blocklist-import.log\n{}",
                    root.display(),
                    if options.blocklist_without_action { "action =\n" } else { "" }
                ),
            )
            .unwrap();
        }
        let wanted = if options.blocklist_jail { "alpha, beta, blocklist-import" } else { "alpha, beta" };
        let mut server = Self { dir, child: None, env: options.env.clone(), wanted };
        server.restart();
        server
    }

    /// (Re)starts the server process on the same directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let root = self.dir.path();
        let child = Command::new("fail2ban-server")
            .arg("-f")
            .arg("-x")
            .arg("-c")
            .arg(root.join("conf"))
            .arg("-s")
            .arg(self.socket())
            .arg("-p")
            .arg(root.join("run/f2b.pid"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fail2ban-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.client(&["status"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(self.wanted) {
                return;
            }
            assert!(Instant::now() < deadline, "fail2ban-server did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, as systemd would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/f2b.sock")
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`) to the server process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("fail2ban-server runs");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    pub fn socket_str(&self) -> String {
        self.socket().display().to_string()
    }

    /// The configuration directory (for `--fail2ban-config-dir`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// fail2ban's database file (unless started with another `dbfile`).
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("run/f2b.sqlite3")
    }

    /// Runs the real `fail2ban-client` against this server.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new("fail2ban-client").arg("-s").arg(self.socket()).args(args).output().expect("run fail2ban-client")
    }

    /// `fail2ban-client` output, asserting success.
    pub fn client_ok(&self, args: &[&str]) -> String {
        let out = self.client(args);
        assert!(out.status.success(), "fail2ban-client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The addresses banned in `jail`, as fail2ban-client reports them.
    pub fn banned(&self, jail: &str) -> Vec<String> {
        self.client_ok(&["get", jail, "banip"]).split_whitespace().map(str::to_owned).collect()
    }

    /// Appends `count` failed-login lines for `ip` to `jail`'s log, stamped now.
    pub fn fail_logins(&self, jail: &str, ip: &str, count: usize) {
        let mut file =
            std::fs::OpenOptions::new().append(true).open(self.dir.path().join(format!("{jail}.log"))).unwrap();
        let out = Command::new("date").arg("+%Y-%m-%d %H:%M:%S").output().unwrap();
        let now = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        for _ in 0..count {
            writeln!(file, "{now} sshd auth failure from {ip}").unwrap();
        }
    }

    /// fail2ban's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fail2ban.log")).unwrap_or_default()
    }
}

impl Drop for Fail2banServer {
    fn drop(&mut self) {
        self.stop();
    }
}
