//! The typed commands of one fail2ban-server, with their replies parsed
//! into plain structs ([`Fail2ban`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bangui_runtime::InvalidArgument;

use crate::{
    ActiveBan, Fail2banError, JailDetail, JailParams, JailStatus, ServerStatus, StartSettings,
    banlist::JailBans,
    bantimes::{self, BanTimes, LocalBan},
    child,
    client::SocketClient,
    codec::PyValue,
    db,
    error::shape,
    validate::JailName,
};

/// fail2ban's jails and bans, as typed operations.
#[derive(Debug, Clone)]
pub struct Fail2ban {
    socket: SocketClient,
    start: Arc<StartSettings>,
    /// fail2ban has no command to read a jail's idle flag; what we set is
    /// remembered here until fail2ban restarts ([`Fail2ban::forget_idle`]).
    idle: Arc<Mutex<HashMap<String, bool>>>,
    /// Ban times from fail2ban's database ([`bantimes`]).
    times: Arc<BanTimes>,
}

/// What `get dbfile` answers when fail2ban keeps its database in memory.
const IN_MEMORY: &str = ":memory:";

/// How long a manual ban's database row is waited for (fail2ban writes it
/// from another thread, a moment after the ban).
const BAN_ROW_WAIT: Duration = Duration::from_secs(1);

impl Fail2ban {
    pub fn new(socket: SocketClient, start: StartSettings) -> Self {
        Self { socket, start: Arc::new(start), idle: Arc::default(), times: Arc::default() }
    }

    /// fail2ban's database file for ban times (`--fail2ban-db`); without
    /// it fail2ban is asked (`get dbfile`).
    #[must_use]
    pub fn with_database(mut self, path: Option<PathBuf>) -> Self {
        self.times = Arc::new(BanTimes::new(path));
        self
    }

    /// fail2ban's database, opened once (`None` when there is none or it
    /// cannot be read).
    async fn times_db(&self) -> Option<db::Fail2banDb> {
        if let Some(pool) = self.times.cached().await {
            return Some(pool);
        }
        let path = self.database_path().await.ok().flatten()?;
        self.times.open(&path).await
    }

    pub fn socket_path(&self) -> &std::path::Path {
        self.socket.socket_path()
    }

    /// Called when fail2ban comes back after being unreachable: it started
    /// afresh, so the idle flags set earlier are gone.
    pub fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn idle_of(&self, jail: &str) -> Option<bool> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).get(jail).copied()
    }

    pub async fn ping(&self) -> Result<(), Fail2banError> {
        match self.socket.call(&["ping"]).await? {
            PyValue::Str(s) if s == "pong" => Ok(()),
            other => Err(shape("ping", &other)),
        }
    }

    pub async fn version(&self) -> Result<String, Fail2banError> {
        let value = self.socket.call(&["version"]).await?;
        value.as_str().map(str::to_owned).ok_or_else(|| shape("version", &value))
    }

    /// The jails `ip` is banned in (`banned <ip>`).
    pub async fn jails_banning(&self, ip: IpAddr) -> Result<Vec<String>, Fail2banError> {
        let value = self.socket.call(&["banned", &ip.to_string()]).await?;
        // [[jail, …]]: one list per address asked about.
        Ok(value.as_list().and_then(|lists| lists.first()).and_then(PyValue::as_str_list).unwrap_or_default())
    }

    /// fail2ban's database file (`get dbfile`), if it keeps one.
    pub async fn dbfile(&self) -> Result<Option<PathBuf>, Fail2banError> {
        match self.socket.call(&["get", "dbfile"]).await? {
            PyValue::Str(path) => Ok(Some(PathBuf::from(path))),
            PyValue::None => Ok(None),
            other => Err(shape("get dbfile", &other)),
        }
    }

    /// fail2ban's database file, found in one place for every reader: the
    /// path given ([`Fail2ban::with_database`], `--fail2ban-db`), else what
    /// fail2ban says (`get dbfile`). `None`: fail2ban keeps none (no
    /// `dbfile`, or `:memory:`).
    pub async fn database_path(&self) -> Result<Option<PathBuf>, Fail2banError> {
        if let Some(path) = self.times.configured() {
            return Ok(Some(path.clone()));
        }
        Ok(self.dbfile().await?.filter(|path| path.as_os_str() != IN_MEMORY))
    }

    /// The names of the running jails.
    pub async fn jail_names(&self) -> Result<Vec<String>, Fail2banError> {
        let value = self.socket.call(&["status"]).await?;
        let pairs = pairs(&value).ok_or_else(|| shape("status", &value))?;
        let list = pairs.get("Jail list").and_then(|v| v.as_str()).ok_or_else(|| shape("status", &value))?;
        Ok(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    /// NOT_FOUND before a command that changes a jail, so nothing is sent
    /// for a jail fail2ban does not run.
    async fn ensure_jail(&self, jail: &JailName) -> Result<(), Fail2banError> {
        if self.jail_names().await?.iter().any(|name| name == jail.as_str()) {
            Ok(())
        } else {
            Err(Fail2banError::UnknownJail(jail.to_string()))
        }
    }

    pub async fn server_status(&self) -> Result<ServerStatus, Fail2banError> {
        let version = self.version().await?;
        let mut jails = Vec::new();
        for name in self.jail_names().await? {
            match self.jail_status_by_name(&name).await {
                Ok(status) => jails.push(status),
                // Stopped between the two commands: it is simply gone.
                Err(Fail2banError::UnknownJail(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(ServerStatus { version, jails })
    }

    pub async fn jail_status(&self, jail: &JailName) -> Result<JailStatus, Fail2banError> {
        self.jail_status_by_name(jail.as_str()).await
    }

    async fn jail_status_by_name(&self, jail: &str) -> Result<JailStatus, Fail2banError> {
        // `short`: the counts and files without the list of banned IPs,
        // which can be long (the bans come from `--with-time`).
        let value = self.socket.call(&["status", jail, "short"]).await?;
        let top = pairs(&value).ok_or_else(|| shape("status <jail>", &value))?;
        let filter = top.get("Filter").and_then(|v| pairs(v)).ok_or_else(|| shape("status <jail> Filter", &value))?;
        let actions =
            top.get("Actions").and_then(|v| pairs(v)).ok_or_else(|| shape("status <jail> Actions", &value))?;
        let count = |section: &HashMap<&str, &PyValue>, key: &str| {
            section.get(key).and_then(|v| v.as_int()).and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
        };
        let strings = |section: &HashMap<&str, &PyValue>, key: &str| {
            section.get(key).and_then(|v| v.as_str_list()).unwrap_or_default()
        };
        Ok(JailStatus {
            name: jail.to_owned(),
            currently_failed: count(&filter, "Currently failed"),
            total_failed: count(&filter, "Total failed"),
            currently_banned: count(&actions, "Currently banned"),
            total_banned: count(&actions, "Total banned"),
            log_paths: strings(&filter, "File list"),
            journal_matches: strings(&filter, "Journal matches"),
            idle: self.idle_of(jail),
        })
    }

    async fn get_int(&self, jail: &JailName, what: &str) -> Result<i64, Fail2banError> {
        let value = self.socket.call(&["get", jail.as_str(), what]).await?;
        value.as_int().ok_or_else(|| shape(what, &value))
    }

    async fn get_strings(&self, jail: &JailName, what: &str) -> Result<Vec<String>, Fail2banError> {
        let value = self.socket.call(&["get", jail.as_str(), what]).await?;
        value.as_str_list().ok_or_else(|| shape(what, &value))
    }

    /// The jail's bans with their start and expiry.
    pub async fn bans(&self, jail: &JailName) -> Result<Vec<ActiveBan>, Fail2banError> {
        self.bans_named(jail.as_str()).await
    }

    /// The bans of a jail fail2ban named (any name it accepts, see
    /// [`Fail2ban::active_bans`]), in Unix time ([`bantimes`]).
    async fn bans_named(&self, jail: &str) -> Result<Vec<ActiveBan>, Fail2banError> {
        let value = self.socket.call(&["get", jail, "banip", "--with-time"]).await?;
        let lines = value.into_str_list().map_err(|value| shape("banip --with-time", &value))?;
        let local = lines.iter().map(|line| parse_ban_line(line)).collect::<Result<Vec<_>, _>>()?;
        drop(lines);
        let mut rows = HashMap::new();
        if let Some(earliest) = local.iter().map(|b| b.local).min()
            && let Some(pool) = self.times_db().await
        {
            match pool.ban_times_since(jail, earliest - bantimes::MAX_OFFSET - 2).await {
                Ok(found) => rows = found,
                Err(error) => {
                    tracing::warn!(%error, jail, "cannot read ban times from fail2ban's database");
                    self.times.reset().await;
                }
            }
        }
        let times = self.times.resolve(&local, &rows);
        drop(rows);
        Ok(local
            .into_iter()
            .zip(times)
            .map(|(ban, (at, _))| ActiveBan {
                jail: jail.to_owned(),
                ip: ban.ip,
                banned_at: at,
                expires_at: (ban.ban_seconds >= 0).then(|| at.saturating_add(ban.ban_seconds)),
                ban_seconds: ban.ban_seconds,
            })
            .collect())
    }

    pub async fn jail_detail(&self, jail: &JailName) -> Result<JailDetail, Fail2banError> {
        let status = self.jail_status(jail).await?;
        let bans = self.bans(jail).await?;
        let bantime = self.get_int(jail, "bantime").await?;
        let findtime = self.get_int(jail, "findtime").await?;
        let maxretry = self.get_int(jail, "maxretry").await?;
        let ignore_ips = self.get_strings(jail, "ignoreip").await?;
        let actions = self.get_strings(jail, "actions").await?;
        Ok(JailDetail {
            status,
            bans,
            bantime,
            findtime,
            maxretry: u32::try_from(maxretry).unwrap_or(0),
            ignore_ips,
            actions,
        })
    }

    /// Every active ban of every running jail.
    pub async fn active_bans(&self) -> Result<Vec<ActiveBan>, Fail2banError> {
        let mut all = Vec::new();
        // The names fail2ban reports are listed as they are: it accepts
        // names (`my jail`, `web+api`) that users cannot type here.
        for name in self.jail_names().await? {
            match self.bans_named(&name).await {
                Ok(bans) => all.extend(bans),
                Err(Fail2banError::UnknownJail(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(all)
    }

    /// Starts `jail` from fail2ban's configuration. Returns false when it
    /// was already running.
    pub async fn start_jail(&self, jail: &JailName) -> Result<bool, Fail2banError> {
        if self.jail_names().await?.iter().any(|name| name == jail.as_str()) {
            return Ok(false);
        }
        let Some(config_dir) = self.start.config_dir.as_ref() else {
            return Err(Fail2banError::CannotStart {
                jail: jail.to_string(),
                reason: "it is not running, and starting a jail needs fail2ban's configuration: \
                         set --fail2ban-config-dir"
                    .into(),
            });
        };
        // `reload --if-exists <jail>` through the binary: it reads this one
        // jail's configuration and sends it; other jails are not touched.
        let mut command =
            child::reload_command(&self.start.client_binary, config_dir, self.socket.socket_path(), jail.as_str());
        let output = match tokio::time::timeout(self.start.timeout, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => {
                return Err(Fail2banError::CannotStart {
                    jail: jail.to_string(),
                    reason: format!("cannot run {}: {error}", self.start.client_binary.display()),
                });
            }
            Err(_) => {
                return Err(Fail2banError::Timeout {
                    after: self.start.timeout,
                    command: "fail2ban-client reload".into(),
                });
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No section:") {
                // fail2ban-client: "Failed during configuration: No section: '<jail>'".
                return Err(Fail2banError::UnknownJail(jail.to_string()));
            }
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            // Drop fail2ban-client's "<date> fail2ban [pid]: ERROR" prefix.
            let reason = last.split_once("ERROR").map_or(last, |(_, rest)| rest).trim().to_owned();
            return Err(Fail2banError::CannotStart { jail: jail.to_string(), reason });
        }
        if self.jail_names().await?.iter().any(|name| name == jail.as_str()) {
            Ok(true)
        } else {
            Err(Fail2banError::UnknownJail(jail.to_string()))
        }
    }

    pub async fn stop_jail(&self, jail: &JailName) -> Result<(), Fail2banError> {
        self.ensure_jail(jail).await?;
        self.socket.call(&["stop", jail.as_str()]).await?;
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).remove(jail.as_str());
        Ok(())
    }

    pub async fn set_idle(&self, jail: &JailName, idle: bool) -> Result<bool, Fail2banError> {
        self.ensure_jail(jail).await?;
        let value = self.socket.call(&["set", jail.as_str(), "idle", if idle { "on" } else { "off" }]).await?;
        let now = match value {
            PyValue::Bool(b) => b,
            other => return Err(shape("set idle", &other)),
        };
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).insert(jail.to_string(), now);
        Ok(now)
    }

    /// Applies `params` (already validated) and returns the values in effect.
    pub async fn set_params(&self, jail: &JailName, params: JailParams) -> Result<(i64, i64, u32), Fail2banError> {
        self.ensure_jail(jail).await?;
        let name = jail.as_str();
        if let Some(seconds) = params.bantime {
            self.socket.call(&["set", name, "bantime", &seconds.to_string()]).await?;
        }
        if let Some(seconds) = params.findtime {
            self.socket.call(&["set", name, "findtime", &seconds.to_string()]).await?;
        }
        if let Some(count) = params.maxretry {
            self.socket.call(&["set", name, "maxretry", &count.to_string()]).await?;
        }
        let maxretry = self.get_int(jail, "maxretry").await?;
        Ok((
            self.get_int(jail, "bantime").await?,
            self.get_int(jail, "findtime").await?,
            u32::try_from(maxretry).unwrap_or(0),
        ))
    }

    /// `entry` is a normalized IP or network (see [`crate::validate::parse_ignore_entry`]).
    pub async fn add_ignore(&self, jail: &JailName, entry: &str) -> Result<Vec<String>, Fail2banError> {
        self.ensure_jail(jail).await?;
        let value = self.socket.call(&["set", jail.as_str(), "addignoreip", entry]).await?;
        value.as_str_list().ok_or_else(|| shape("addignoreip", &value))
    }

    pub async fn remove_ignore(&self, jail: &JailName, entry: &str) -> Result<Vec<String>, Fail2banError> {
        self.ensure_jail(jail).await?;
        let value = self.socket.call(&["set", jail.as_str(), "delignoreip", entry]).await?;
        value.as_str_list().ok_or_else(|| shape("delignoreip", &value))
    }

    /// Bans `ip` in `jail`; false when it was already banned there.
    pub async fn ban(&self, jail: &JailName, ip: IpAddr) -> Result<bool, Fail2banError> {
        Ok(self.ban_timed(jail, ip).await?.is_some())
    }

    /// Bans `ip` in `jail`. A new ban comes back with its time (Unix
    /// seconds, as fail2ban's database has it) and length, found with
    /// targeted look-ups (the ban's database row, else the moment of the
    /// command and the jail's `bantime`), never by reading the jail's bans.
    pub async fn ban_timed(&self, jail: &JailName, ip: IpAddr) -> Result<Option<(i64, i64)>, Fail2banError> {
        self.ensure_jail(jail).await?;
        let ip = ip.to_string();
        let sent = unix_now();
        let value = self.socket.call(&["set", jail.as_str(), "banip", &ip]).await?;
        let answered = unix_now();
        if !value.as_int().map(|n| n > 0).ok_or_else(|| shape("banip", &value))? {
            return Ok(None);
        }
        // fail2ban stamped the ban between `sent` and `answered`.
        let (from, to) = (sent.floor() as i64 - 1, answered.ceil() as i64 + 1);
        if let Some(row) = self.ban_row(jail, &ip, from, to).await {
            return Ok(Some(row));
        }
        let at = ((sent + answered) / 2.0).round() as i64;
        let seconds = self.get_int(jail, "bantime").await?;
        Ok(Some((at, seconds)))
    }

    /// The time and length of the ban of `ip` in `jail` stamped between
    /// `from` and `to` (Unix seconds), from fail2ban's database, waited for
    /// a moment (fail2ban writes the row from another thread). `None`
    /// without a readable database.
    pub async fn ban_row(&self, jail: &JailName, ip: &str, from: i64, to: i64) -> Option<(i64, i64)> {
        let pool = self.times_db().await?;
        let deadline = tokio::time::Instant::now() + BAN_ROW_WAIT;
        loop {
            match pool.ban_time(jail.as_str(), ip, from, to).await {
                Ok(Some(row)) => return Some(row),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the ban's time from fail2ban's database");
                    self.times.reset().await;
                    return None;
                }
            }
        }
    }

    /// Where fail2ban's database ends now (its largest rowid), to tell
    /// later which bans came after ([`Fail2ban::banned_after`]). `None`
    /// without a readable database.
    pub async fn bans_mark(&self) -> Option<i64> {
        let pool = self.times_db().await?;
        match pool.max_rowid().await {
            Ok(mark) => Some(mark),
            Err(error) => {
                tracing::warn!(%error, "cannot read fail2ban's database");
                self.times.reset().await;
                None
            }
        }
    }

    /// Which of `ips` fail2ban's database has as banned in `jail` after
    /// `mark` ([`Fail2ban::bans_mark`]), waited for until `expected` are
    /// found (fail2ban writes the rows a moment after the bans) or a moment
    /// passed. `None` without a readable database.
    pub async fn banned_after(
        &self,
        jail: &JailName,
        ips: &[String],
        mark: i64,
        expected: usize,
    ) -> Option<Vec<String>> {
        let pool = self.times_db().await?;
        let wanted: std::collections::HashSet<&str> = ips.iter().map(String::as_str).collect();
        let deadline = tokio::time::Instant::now() + BULK_ROW_WAIT;
        loop {
            match pool.banned_after(jail.as_str(), mark).await {
                Ok(rows) => {
                    let mut found: Vec<String> = rows.into_iter().filter(|ip| wanted.contains(ip.as_str())).collect();
                    found.sort_unstable();
                    found.dedup();
                    if found.len() >= expected || tokio::time::Instant::now() >= deadline {
                        return Some(found);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read bans from fail2ban's database");
                    self.times.reset().await;
                    return None;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Unbans `ip` from `jail`, or from every jail; returns the bans lifted.
    pub async fn unban(&self, ip: IpAddr, jail: Option<&JailName>) -> Result<u32, Fail2banError> {
        let ip = ip.to_string();
        let value = match jail {
            Some(jail) => {
                self.ensure_jail(jail).await?;
                self.socket.call(&["set", jail.as_str(), "unbanip", &ip]).await?
            }
            None => self.socket.call(&["unban", &ip]).await?,
        };
        value.as_int().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| shape("unban", &value))
    }
}

/// How long one command carrying many addresses may take: fail2ban runs
/// the jail's ban action once per address (a process each, for most
/// actions), so a chunk takes far longer than a query.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(120);

/// How long reading a jail's bans may take: fail2ban 1.0.2 builds the
/// whole reply before it sends a byte, 8.3 s for 1 000 000 bans on a
/// developer's machine (0.6 s for 100 000), so the limit of 2 000 000
/// bans fits with room for a slow host.
pub const BAN_LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the database rows of a many-address ban are waited for.
const BULK_ROW_WAIT: Duration = Duration::from_secs(5);

/// Commands on many addresses at once, for blocklist imports. Entries are
/// addresses or networks in canonical text (`1.2.3.4`, `1.2.3.0/24`),
/// checked here again before they reach the socket.
impl Fail2ban {
    /// Every ban of `jail` as fail2ban holds it now (`get <jail> banip`),
    /// canonical, sorted and without duplicates; see [`crate::banlist`] for how
    /// the reply is read in bounded memory and its limits. A jail larger
    /// than the limits is [`Fail2banError::ReplyTooLarge`], never a part of
    /// its bans. The command takes one of the client's slots like any
    /// other; its deadline is [`BAN_LIST_TIMEOUT`] (or the client's reply
    /// timeout when longer).
    pub async fn jail_bans(&self, jail: &JailName) -> Result<JailBans, Fail2banError> {
        let deadline = self.socket.reply_timeout().max(BAN_LIST_TIMEOUT);
        let bans = self.socket.call_ban_list(&["get", jail.as_str(), "banip"], deadline).await?;
        // Sorting a million addresses takes a few tens of milliseconds.
        tokio::task::spawn_blocking(move || bans.normalize())
            .await
            .map_err(|error| Fail2banError::Protocol(format!("sorting the jail's bans failed: {error}")))
    }

    /// The jail's ban length in seconds (-1: for good).
    pub async fn bantime(&self, jail: &JailName) -> Result<i64, Fail2banError> {
        self.get_int(jail, "bantime").await
    }

    /// The jail's ignoreip list (addresses, networks, and whatever else
    /// fail2ban accepts there, e.g. host names).
    pub async fn ignore_list(&self, jail: &JailName) -> Result<Vec<String>, Fail2banError> {
        self.get_strings(jail, "ignoreip").await
    }

    /// Bans `entries` in `jail` with one command; returns how many fail2ban
    /// newly banned (those already banned are not counted).
    pub async fn ban_many(&self, jail: &JailName, entries: &[String]) -> Result<u64, Fail2banError> {
        self.bulk_count(&["set", jail.as_str(), "banip"], entries, "banip").await
    }

    /// Unbans `entries` from `jail` with one command (those not banned are
    /// passed over); returns how many were unbanned.
    pub async fn unban_many(&self, jail: &JailName, entries: &[String]) -> Result<u64, Fail2banError> {
        self.bulk_count(&["set", jail.as_str(), "unbanip"], entries, "unbanip").await
    }

    async fn bulk_count(&self, head: &[&str], entries: &[String], what: &str) -> Result<u64, Fail2banError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let args = bulk_args(head, entries)?;
        let value = self.socket.call_within(&args, BULK_TIMEOUT).await?;
        value.as_int().and_then(|n| u64::try_from(n).ok()).ok_or_else(|| shape(what, &value))
    }
}

/// `head` followed by `entries`, each checked to be an address or a
/// network (nothing else reaches the socket).
fn bulk_args<'a>(head: &[&'a str], entries: &'a [String]) -> Result<Vec<&'a str>, Fail2banError> {
    let mut args = head.to_vec();
    for entry in entries {
        if entry.parse::<IpAddr>().is_err() && entry.parse::<ipnet::IpNet>().is_err() {
            return Err(InvalidArgument::new("entry", format!("{entry:?} is not an address or a network")).into());
        }
        args.push(entry.as_str());
    }
    Ok(args)
}

/// fail2ban's `[(name, value), …]` lists as a map.
fn pairs(value: &PyValue) -> Option<HashMap<&str, &PyValue>> {
    value
        .as_list()?
        .iter()
        .map(|pair| match pair.as_list()? {
            [PyValue::Str(name), value] => Some((name.as_str(), value)),
            _ => None,
        })
        .collect()
}

/// Unix time now, with its fraction.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Parses `"1.2.3.4 \t2026-11-23 16:17:36 + 3600 = 2026-11-23 17:17:36"`.
/// The start is fail2ban's local time ([`bantimes`] makes it Unix time).
fn parse_ban_line(line: &str) -> Result<LocalBan, Fail2banError> {
    let bad = || {
        let shown: String = line.chars().take(120).collect();
        Fail2banError::Protocol(format!("ban entry {shown:?}"))
    };
    let (ip, rest) = line.split_once('\t').ok_or_else(bad)?;
    let (start, rest) = rest.split_once(" + ").ok_or_else(bad)?;
    let (seconds, _end) = rest.split_once(" = ").ok_or_else(bad)?;
    let ban_seconds: i64 = seconds.trim().parse().map_err(|_| bad())?;
    let local = bantimes::parse_local(start).ok_or_else(bad)?;
    Ok(LocalBan { ip: ip.trim().to_owned(), local, ban_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_lines() {
        let ban = parse_ban_line("192.0.2.10 \t2026-11-23 16:17:36 + 3600 = 2026-11-23 17:17:36").unwrap();
        assert_eq!(ban.ip, "192.0.2.10");
        assert_eq!(ban.ban_seconds, 3600);
        // 2026-11-23 16:17:36 read as UTC (the zone is resolved later).
        assert_eq!(ban.local, 1_795_450_656);

        let permanent = parse_ban_line("198.51.100.7 \t2026-11-23 16:26:03 + -1 = 9999-12-31 23:59:59").unwrap();
        assert_eq!(permanent.ban_seconds, -1);

        for bad in ["", "1.2.3.4", "1.2.3.4 \tyesterday + 1 = x", "1.2.3.4 \t2026-11-23 16:17:36 + soon = x"] {
            assert!(matches!(parse_ban_line(bad), Err(Fail2banError::Protocol(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_given_database_path_is_used_without_asking_fail2ban() {
        let socket = SocketClient::new(
            crate::SocketSettings {
                path: "/nonexistent/fail2ban.sock".into(),
                connect_timeout: Duration::from_millis(100),
                reply_timeout: Duration::from_millis(100),
                max_in_flight: 1,
            },
            Arc::new(crate::Unobserved),
        );
        let start = StartSettings {
            client_binary: "fail2ban-client".into(),
            config_dir: None,
            timeout: Duration::from_secs(1),
        };
        let fail2ban = Fail2ban::new(socket, start);
        // Not given: fail2ban is asked, and it is down.
        assert!(fail2ban.database_path().await.unwrap_err().is_unavailable());
        let given = fail2ban.with_database(Some("/var/lib/fail2ban/fail2ban.sqlite3".into()));
        assert_eq!(given.database_path().await.unwrap(), Some(PathBuf::from("/var/lib/fail2ban/fail2ban.sqlite3")));
    }

    #[test]
    fn exceptions_map_to_typed_errors() {
        let args = PyValue::Str("sshd".into());
        assert!(matches!(
            Fail2banError::from_exception("fail2ban.exceptions", "UnknownJailException", &args),
            Fail2banError::UnknownJail(name) if name == "sshd"
        ));
        assert!(matches!(
            Fail2banError::from_exception("builtins", "ValueError", &args),
            Fail2banError::Rejected { class, .. } if class == "builtins.ValueError"
        ));
    }
}
