//! A fail2ban of our own, for benchmarks at a size real fail2ban is far
//! too slow for (it bans about 8 000 addresses a second and answers
//! `get <jail> banip` for 1 000 000 bans in 8 s; this one answers at once).
//!
//! It speaks fail2ban's socket protocol ([`crate::pickle`]): a request is a
//! pickled list of strings ended by `<F2B_END_COMMAND>`, a reply
//! `(0, value)` or `(1, exception)` pickled as fail2ban 1.0.2 does it
//! (protocol 5, addresses as `builtins.str` via REDUCE), several commands
//! per connection, `<F2B_CLOSE_COMMAND>` to close. It holds jails and their
//! bans in memory, runs no action, reads no log and writes no database.
//!
//! The commands, with fail2ban's semantics (server/transmitter.py,
//! actions.py, banmanager.py of 1.0.2): `ping`, `version`, `echo`,
//! `server-status`, `status`, `status <jail> [short|basic]`, `banned
//! [ip…]`, `unban ip…|--all`, `stop` (the server), `stop <jail>|--all`,
//! `get dbfile|dbpurgeage|loglevel`, `get <jail> banip [--with-time]|banned
//! [ip…]|bantime|findtime|maxretry|ignoreip|ignoreself|logpath|actions`,
//! `set <jail> banip ip…` (the count newly banned; a ban of a banned
//! address prolongs it as fail2ban does), `set <jail> unbanip
//! [--report-absent] ip…` (a network unbans what it contains),
//! `set <jail> idle on|off|bantime|findtime|maxretry|addignoreip|delignoreip`.
//! Anything else answers the exception fail2ban raises (`Invalid command`,
//! `UnknownJailException`, `IndexError`, …).
//!
//! Where it differs from fail2ban: it reads no log (a jail's `File list`
//! is empty, nothing fails), runs no action, keeps no database (`get
//! dbfile` says what `--dbfile` gave), resolves no host name, and pickles
//! an address banned in two jails twice in `banned`, where fail2ban may
//! pickle its one cached object once and refer back to it.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use ipnet::{IpNet, Ipv4Net};

use crate::pickle::{self, CLOSE, END, Py};

/// The version it claims.
pub const VERSION: &str = "1.0.2";
/// fail2ban's `MyTime.MAX_TIME`: the end of a permanent ban.
const MAX_TIME: f64 = 0x7FFF_FFFF_FFFF_u64 as f64;
/// Largest request read.
const MAX_REQUEST: usize = 256 * 1024 * 1024;

/// A jail to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSpec {
    pub name: String,
    /// Seconds, -1 for permanent bans.
    pub bantime: i64,
}

impl JailSpec {
    /// `NAME` (bantime 600, fail2ban's default) or `NAME=BANTIME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            None if !text.is_empty() => Ok(Self { name: text.to_owned(), bantime: 600 }),
            Some((name, bantime)) if !name.is_empty() => Ok(Self {
                name: name.to_owned(),
                bantime: bantime.parse().map_err(|_| format!("bantime {bantime:?} is not a number of seconds"))?,
            }),
            _ => Err(format!("{text:?} is not NAME or NAME=BANTIME")),
        }
    }
}

/// What a ban is keyed by: fail2ban's `IPAddr` (an address, a network, or
/// the raw text it could not parse).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BanId {
    Net(IpNet),
    Raw(Box<str>),
}

impl BanId {
    /// `IPAddr(text)`: an IPv4-mapped address as IPv4, a network with its
    /// host bits cleared.
    fn parse(text: &str) -> Self {
        let net = match text.split_once('/') {
            Some(_) => text.parse::<IpNet>().ok(),
            None => text.parse::<IpAddr>().ok().map(|ip| IpNet::from(ip.to_canonical())),
        };
        match net {
            Some(IpNet::V6(v6)) if v6.prefix_len() >= 96 && v6.addr().to_ipv4_mapped().is_some() => {
                let v4 = v6.addr().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
                match Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    Ok(net) => BanId::Net(IpNet::V4(net.trunc())),
                    Err(_) => BanId::Raw(text.into()),
                }
            }
            Some(net) => BanId::Net(net.trunc()),
            None => BanId::Raw(text.into()),
        }
    }

    /// `IPAddr.ntoa`: an address without its prefix when it is a single
    /// one, IPv6 as glibc's `inet_ntop` writes it.
    fn text(&self) -> String {
        match self {
            BanId::Raw(raw) => raw.to_string(),
            BanId::Net(IpNet::V4(net)) if net.prefix_len() == 32 => net.addr().to_string(),
            BanId::Net(IpNet::V4(net)) => format!("{}/{}", net.addr(), net.prefix_len()),
            BanId::Net(IpNet::V6(net)) if net.prefix_len() == 128 => ntop6(net.addr()),
            BanId::Net(IpNet::V6(net)) => format!("{}/{}", ntop6(net.addr()), net.prefix_len()),
        }
    }

    fn is_single(&self) -> bool {
        matches!(self, BanId::Net(net) if net.prefix_len() == net.max_prefix_len())
    }

    /// `IPAddr.contains`: a network holds an address or smaller network.
    fn contains(&self, other: &BanId) -> bool {
        match (self, other) {
            (BanId::Net(outer), BanId::Net(inner)) => outer.contains(inner),
            _ => false,
        }
    }
}

/// glibc's `inet_ntop` for IPv6: Rust's form, except an IPv4-compatible
/// address (`::a.b.c.d`), which glibc writes with the IPv4 inside.
fn ntop6(addr: Ipv6Addr) -> String {
    let s = addr.segments();
    if s[..6] == [0; 6] && s[6] != 0 {
        let [.., a, b, c, d] = addr.octets();
        return format!("::{}", Ipv4Addr::new(a, b, c, d));
    }
    addr.to_string()
}

#[derive(Debug, Clone)]
struct Ticket {
    id: BanId,
    /// Unix time of the ban.
    time: f64,
    /// A ban time of its own (set when a ban was prolonged).
    bantime: Option<i64>,
}

impl Ticket {
    fn bantime(&self, jail: i64) -> i64 {
        self.bantime.unwrap_or(jail)
    }

    fn end(&self, jail: i64) -> f64 {
        match self.bantime(jail) {
            -1 => MAX_TIME,
            seconds => self.time + seconds as f64,
        }
    }
}

/// A jail's bans in the order fail2ban's dict keeps them (insertion).
#[derive(Debug, Default)]
struct Bans {
    slots: Vec<Option<Ticket>>,
    index: HashMap<BanId, usize>,
}

impl Bans {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn get_mut(&mut self, id: &BanId) -> Option<&mut Ticket> {
        let slot = *self.index.get(id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    fn contains(&self, id: &BanId) -> bool {
        self.index.contains_key(id)
    }

    fn insert(&mut self, ticket: Ticket) {
        self.index.insert(ticket.id.clone(), self.slots.len());
        self.slots.push(Some(ticket));
    }

    fn remove(&mut self, id: &BanId) -> bool {
        let Some(slot) = self.index.remove(id) else { return false };
        self.slots[slot] = None;
        if self.slots.len() > 1024 && self.slots.len() > 2 * self.index.len() {
            self.compact();
        }
        true
    }

    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        self.index.clear();
        for (i, ticket) in self.slots.iter().flatten().enumerate() {
            self.index.insert(ticket.id.clone(), i);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Ticket> {
        self.slots.iter().flatten()
    }

    fn clear(&mut self) -> usize {
        let n = self.len();
        self.slots.clear();
        self.index.clear();
        n
    }
}

#[derive(Debug)]
struct Jail {
    name: String,
    bantime: i64,
    findtime: i64,
    maxretry: i64,
    idle: bool,
    /// fail2ban's ignore list (networks and names) and set (addresses).
    ignore_list: Vec<BanId>,
    ignore_set: Vec<BanId>,
    bans: Bans,
    total: u64,
}

impl Jail {
    fn new(spec: &JailSpec) -> Self {
        Self {
            name: spec.name.clone(),
            bantime: spec.bantime,
            findtime: 600,
            maxretry: 5,
            idle: false,
            ignore_list: Vec::new(),
            ignore_set: Vec::new(),
            bans: Bans::default(),
            total: 0,
        }
    }

    /// `Actions.addBannedIP`: the count newly banned.
    fn ban(&mut self, ips: &[String], now: f64) -> i64 {
        let mut count = 0;
        for ip in ips {
            let id = BanId::parse(ip);
            let end = if self.bantime == -1 { MAX_TIME } else { now + self.bantime as f64 };
            let jail_bantime = self.bantime;
            if let Some(old) = self.bans.get_mut(&id) {
                // BanManager.addBanTicket: a later end prolongs the ban.
                if end > old.end(jail_bantime) && jail_bantime != -1 {
                    let extra = now - old.time;
                    let seconds = if extra > 0.0 { jail_bantime + extra as i64 } else { jail_bantime };
                    old.bantime = Some(seconds);
                }
                continue;
            }
            self.bans.insert(Ticket { id, time: now, bantime: None });
            self.total += 1;
            count += 1;
        }
        count
    }

    /// `Actions.removeBannedIP` of one id. fail2ban finds the ban by the
    /// hash of the text it was sent, which only its own form of the
    /// address matches (`9.9.9.9` unbans, `9.9.9.9/32` and
    /// `::ffff:9.9.9.9` do not); a network that is not itself banned
    /// unbans what it contains.
    fn unban_one(&mut self, text: &str) -> i64 {
        let id = BanId::parse(text);
        if id.text() == text && self.bans.remove(&id) {
            return 1;
        }
        if id.is_single() || matches!(id, BanId::Raw(_)) {
            // fail2ban resolves a name here; this one does not.
            return 0;
        }
        let inside: Vec<BanId> = self.bans.iter().filter(|t| id.contains(&t.id)).map(|t| t.id.clone()).collect();
        inside.iter().filter(|i| self.bans.remove(i)).count() as i64
    }

    /// The ban list `get banip` shows: ordered by the end of the ban
    /// (stable, so insertion order among equal ends).
    fn ordered(&self) -> Vec<&Ticket> {
        let mut list: Vec<&Ticket> = self.bans.iter().collect();
        list.sort_by(|a, b| a.end(self.bantime).total_cmp(&b.end(self.bantime)));
        list
    }

    fn ignore_entries(&self) -> Py {
        Py::List(self.ignore_list.iter().chain(&self.ignore_set).map(|id| Py::Ip(id.text())).collect())
    }

    fn status(&self, short: bool) -> Py {
        let filter = Py::List(vec![
            Py::pair("Currently failed", Py::Int(0)),
            Py::pair("Total failed", Py::Int(0)),
            Py::pair("File list", Py::List(vec![])),
        ]);
        let mut actions = vec![
            Py::pair("Currently banned", Py::Int(self.bans.len() as i64)),
            Py::pair("Total banned", Py::Int(self.total as i64)),
        ];
        if !short {
            actions.push(Py::pair("Banned IP list", self.unordered()));
        }
        Py::List(vec![Py::pair("Filter", filter), Py::pair("Actions", Py::List(actions))])
    }

    fn unordered(&self) -> Py {
        Py::List(self.bans.iter().map(|t| Py::Ip(t.id.text())).collect())
    }
}

/// The server's state: its jails, in the order they were given.
#[derive(Debug)]
pub struct Server {
    jails: Vec<Jail>,
    dbfile: Option<String>,
}

/// A command's outcome: a value, or the exception fail2ban would raise.
type Outcome = Result<Py, Py>;

fn exception(name: &str, message: impl Into<String>) -> Py {
    Py::exception("builtins", name, message)
}

fn invalid(message: &str) -> Py {
    exception("Exception", message)
}

fn index_error() -> Py {
    exception("IndexError", "list index out of range")
}

/// Python's `repr` of a string or a list of strings.
fn repr(text: &str) -> String {
    if text.contains('\'') && !text.contains('"') { format!("\"{text}\"") } else { format!("'{text}'") }
}

fn arg(args: &[String], i: usize) -> Result<&str, Py> {
    args.get(i).map(String::as_str).ok_or_else(index_error)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `MyTime.time2str`: local time, seconds floored.
fn time2str(unix: f64) -> String {
    use chrono::TimeZone;
    if unix >= MAX_TIME {
        return "9999-12-31 23:59:59".into();
    }
    match chrono::Local.timestamp_opt(unix.floor() as i64, 0) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        }
        chrono::LocalResult::None => "1970-01-01 00:00:00".into(),
    }
}

/// `MyTime.str2seconds` for plain numbers (what the services send).
fn seconds(text: &str) -> Result<i64, Py> {
    text.trim().parse::<i64>().map_err(|_| exception("NameError", format!("name {} is not defined", repr(text))))
}

impl Server {
    pub fn new(jails: &[JailSpec], dbfile: Option<String>) -> Self {
        Self { jails: jails.iter().map(Jail::new).collect(), dbfile }
    }

    fn jail(&mut self, name: &str) -> Result<&mut Jail, Py> {
        self.jails
            .iter_mut()
            .find(|j| j.name == name)
            .ok_or_else(|| Py::exception("fail2ban.exceptions", "UnknownJailException", name.to_owned()))
    }

    /// Runs one command (`Transmitter.__commandHandler`); `true` when it
    /// was `stop`: the caller replies, then ends the server.
    pub fn handle(&mut self, command: &[String]) -> (Outcome, bool) {
        let name = match command.first() {
            Some(name) => name.as_str(),
            None => return (Err(index_error()), false),
        };
        let rest = &command[1..];
        let outcome = match name {
            "ping" => Ok(Py::str("pong")),
            "version" => Ok(Py::str(VERSION)),
            "echo" => Ok(Py::List(rest.iter().map(|a| Py::str(a.clone())).collect())),
            "server-status" => Ok(Py::str("Server ready")),
            "status" => self.status(rest),
            "get" => self.get(rest),
            "set" => self.set(rest),
            "banned" => Ok(self.banned(rest)),
            "unban" if !rest.is_empty() => Ok(Py::Int(self.unban_everywhere(rest))),
            "stop" if rest.is_empty() => return (Ok(Py::None), true),
            "stop" if rest[0] == "--all" => {
                self.jails.clear();
                Ok(Py::None)
            }
            "stop" => match self.jails.iter().position(|j| j.name == rest[0]) {
                Some(i) => {
                    self.jails.remove(i);
                    Ok(Py::None)
                }
                None => Err(Py::exception("fail2ban.exceptions", "UnknownJailException", rest[0].clone())),
            },
            _ => Err(invalid("Invalid command")),
        };
        (outcome, false)
    }

    fn status(&mut self, args: &[String]) -> Outcome {
        match args {
            [] => {
                let mut names: Vec<&str> = self.jails.iter().map(|j| j.name.as_str()).collect();
                names.sort_unstable();
                Ok(Py::List(vec![
                    Py::pair("Number of jail", Py::Int(self.jails.len() as i64)),
                    Py::pair("Jail list", Py::str(names.join(", "))),
                ]))
            }
            [jail] => Ok(self.jail(jail)?.status(false)),
            [jail, flavor] => Ok(self.jail(jail)?.status(flavor == "short")),
            _ => Err(invalid("Invalid command (no status)")),
        }
    }

    fn banned(&mut self, ids: &[String]) -> Py {
        if ids.is_empty() {
            return Py::List(
                self.jails.iter().map(|j| Py::Dict(vec![(Py::Shared(j.name.clone()), j.unordered())])).collect(),
            );
        }
        Py::List(
            ids.iter()
                .map(|ip| {
                    let id = BanId::parse(ip);
                    Py::List(
                        self.jails
                            .iter()
                            .filter(|j| j.bans.contains(&id))
                            .map(|j| Py::Shared(j.name.clone()))
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    fn unban_everywhere(&mut self, ips: &[String]) -> i64 {
        if ips.len() == 1 && ips[0] == "--all" {
            return self.jails.iter_mut().map(|j| j.bans.clear() as i64).sum();
        }
        let mut count = 0;
        for jail in &mut self.jails {
            for ip in ips {
                count += jail.unban_one(ip);
            }
        }
        count
    }

    fn get(&mut self, args: &[String]) -> Outcome {
        let name = arg(args, 0)?;
        match name {
            "dbfile" => return Ok(self.dbfile.clone().map_or(Py::None, Py::Str)),
            "dbpurgeage" => return Ok(if self.dbfile.is_some() { Py::Int(86400) } else { Py::None }),
            "loglevel" => return Ok(Py::str("INFO")),
            _ => {}
        }
        let what = arg(args, 1)?;
        let known =
            ["banned", "logpath", "ignoreip", "ignoreself", "findtime", "maxretry", "bantime", "banip", "actions"];
        if !known.contains(&what) {
            return Err(invalid("Invalid command (no get action or not yet implemented)"));
        }
        let jail = self.jail(name)?;
        Ok(match what {
            "banned" => {
                let ids = &args[2..];
                let hit = |ip: &String| i64::from(jail.bans.contains(&BanId::parse(ip)));
                match ids {
                    [] => jail.unordered(),
                    [one] => Py::Int(hit(one)),
                    many => Py::List(many.iter().map(|ip| Py::Int(hit(ip))).collect()),
                }
            }
            "logpath" | "actions" => Py::List(vec![]),
            "ignoreip" => jail.ignore_entries(),
            "ignoreself" => Py::Bool(true),
            "findtime" => Py::Int(jail.findtime),
            "maxretry" => Py::Int(jail.maxretry),
            "bantime" => Py::Int(jail.bantime),
            _ => {
                let with_time = args.get(2).is_some_and(|a| a == "--with-time");
                let bantime = jail.bantime;
                Py::List(
                    jail.ordered()
                        .into_iter()
                        .map(|t| {
                            if with_time {
                                Py::str(format!(
                                    "{} \t{} + {} = {}",
                                    t.id.text(),
                                    time2str(t.time),
                                    t.bantime(bantime),
                                    time2str(t.end(bantime))
                                ))
                            } else {
                                Py::Ip(t.id.text())
                            }
                        })
                        .collect(),
                )
            }
        })
    }

    fn set(&mut self, args: &[String]) -> Outcome {
        let name = arg(args, 0)?;
        let what = arg(args, 1)?;
        match what {
            "idle" => {
                let idle = match arg(args, 2)? {
                    "on" => true,
                    "off" => false,
                    _ => return Err(invalid("Invalid idle option, must be 'on' or 'off'")),
                };
                let jail = self.jail(name)?;
                jail.idle = idle;
                Ok(Py::Bool(jail.idle))
            }
            "addignoreip" => {
                let jail = self.jail(name)?;
                for value in &args[2..] {
                    if value.is_empty() {
                        continue;
                    }
                    let id = BanId::parse(value);
                    if jail.ignore_list.contains(&id) || jail.ignore_set.contains(&id) {
                        continue;
                    }
                    if id.is_single() { jail.ignore_set.push(id) } else { jail.ignore_list.push(id) }
                }
                Ok(jail.ignore_entries())
            }
            "delignoreip" => {
                let value = arg(args, 2)?.to_owned();
                let jail = self.jail(name)?;
                let id = BanId::parse(&value);
                jail.ignore_list.retain(|i| *i != id);
                jail.ignore_set.retain(|i| *i != id);
                Ok(jail.ignore_entries())
            }
            "bantime" | "findtime" => {
                let value = seconds(arg(args, 2)?)?;
                let jail = self.jail(name)?;
                if what == "bantime" {
                    jail.bantime = value;
                } else {
                    jail.findtime = value;
                }
                Ok(Py::Int(value))
            }
            "maxretry" => {
                let text = arg(args, 2)?;
                let value = text.trim().parse::<i64>().map_err(|_| {
                    exception("ValueError", format!("invalid literal for int() with base 10: {}", repr(text)))
                })?;
                let jail = self.jail(name)?;
                jail.maxretry = value;
                Ok(Py::Int(value))
            }
            "banip" => {
                let now = now();
                let jail = self.jail(name)?;
                Ok(Py::Int(jail.ban(&args[2..], now)))
            }
            "unbanip" => {
                let (report, ips) = match arg(args, 2)? {
                    "--report-absent" => (true, &args[3..]),
                    _ => (false, &args[2..]),
                };
                let jail = self.jail(name)?;
                let mut count = 0;
                let mut missed = Vec::new();
                for ip in ips {
                    match jail.unban_one(ip) {
                        0 => missed.push(repr(ip)),
                        n => count += n,
                    }
                }
                if report && !missed.is_empty() {
                    return Err(exception("ValueError", format!("not banned: [{}]", missed.join(", "))));
                }
                Ok(Py::Int(count))
            }
            other => Err(invalid(&format!("Invalid command {} (no set action or not yet implemented)", repr(other)))),
        }
    }
}

/// Serves `listener` until a `stop` command; each connection on a thread
/// of its own, the commands one at a time (as fail2ban does).
pub fn serve(listener: UnixListener, server: Server, log: bool) -> io::Result<()> {
    let server = Arc::new(Mutex::new(server));
    for stream in listener.incoming() {
        let stream = stream?;
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            if let Ok(true) = connection(stream, &server, log) {
                // `stop`: the reply is out; the server ends.
                std::process::exit(0);
            }
        });
    }
    Ok(())
}

/// One client: commands until it closes or says goodbye. `true` when it
/// asked the server to stop.
fn connection(mut stream: UnixStream, server: &Mutex<Server>, log: bool) -> io::Result<bool> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let Some(end) = find(&buffer, END) else {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(false);
            }
            buffer.extend_from_slice(&chunk[..n]);
            if buffer.len() > MAX_REQUEST {
                return Ok(false);
            }
            continue;
        };
        let message: Vec<u8> = buffer.drain(..end + END.len()).take(end).collect();
        if message == CLOSE {
            return Ok(false);
        }
        let (reply, stop) = match pickle::loads_request(&message) {
            Ok(command) => {
                if log {
                    let shown: String = command.join(" ").chars().take(200).collect();
                    eprintln!("fake-fail2ban: {shown}");
                }
                let (outcome, stop) = server.lock().unwrap_or_else(PoisonError::into_inner).handle(&command);
                let reply = match outcome {
                    Ok(value) => pickle::ok_reply(value),
                    Err(exception) => pickle::error_reply(exception),
                };
                (reply, stop)
            }
            Err(error) => (pickle::dumps(&Py::Str(format!("ERROR: {error}"))), false),
        };
        stream.write_all(&reply)?;
        stream.write_all(END)?;
        if stop {
            return Ok(true);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The binary's options: `--socket PATH`, `--jail NAME[=BANTIME]`
/// (repeated), `--dbfile PATH`, `--log` (each command to stderr).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub socket: PathBuf,
    pub jails: Vec<JailSpec>,
    pub dbfile: Option<String>,
    pub log: bool,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Options::default();
        let mut socket = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--socket" => socket = Some(PathBuf::from(value()?)),
                "--jail" => options.jails.push(JailSpec::parse(&value()?)?),
                "--dbfile" => options.dbfile = Some(value()?),
                "--log" => options.log = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        options.socket = socket.ok_or("--socket PATH is required")?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(server: &mut Server, args: &[&str]) -> Outcome {
        let command: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        server.handle(&command).0
    }

    #[test]
    fn ban_ids_are_normalized_as_fail2ban_does() {
        for (given, shown) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4/32", "1.2.3.4"),
            ("1.2.3.5/24", "1.2.3.0/24"),
            ("::ffff:5.6.7.8", "5.6.7.8"),
            ("2001:DB8:0::5", "2001:db8::5"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("foo.example", "foo.example"),
        ] {
            assert_eq!(BanId::parse(given).text(), shown, "{given}");
        }
    }

    #[test]
    fn bans_count_what_is_new_and_unbans_what_a_network_holds() {
        let mut server = Server::new(&[JailSpec::parse("bl=-1").unwrap()], None);
        let ban = |s: &mut Server, ips: &[&str]| {
            let mut args = vec!["set", "bl", "banip"];
            args.extend_from_slice(ips);
            cmd(s, &args)
        };
        assert_eq!(ban(&mut server, &["1.2.3.4", "1.2.3.0/24", "2001:db8::1", "1.2.3.5/24"]), Ok(Py::Int(3)));
        assert_eq!(ban(&mut server, &["1.2.3.4"]), Ok(Py::Int(0)));
        assert_eq!(
            cmd(&mut server, &["get", "bl", "banip"]),
            Ok(Py::List(vec![Py::Ip("1.2.3.4".into()), Py::Ip("1.2.3.0/24".into()), Py::Ip("2001:db8::1".into())]))
        );
        assert_eq!(cmd(&mut server, &["set", "bl", "unbanip", "9.9.9.9"]), Ok(Py::Int(0)));
        // As fail2ban: only its own text of a ban finds it.
        assert_eq!(cmd(&mut server, &["set", "bl", "unbanip", "1.2.3.4/32", "::ffff:1.2.3.4"]), Ok(Py::Int(0)));
        assert_eq!(
            cmd(&mut server, &["banned", "1.2.3.4/32"]),
            Ok(Py::List(vec![Py::List(vec![Py::Shared("bl".into())])]))
        );
        assert!(cmd(&mut server, &["set", "bl", "unbanip", "--report-absent", "9.9.9.9"]).is_err());
        assert_eq!(cmd(&mut server, &["set", "bl", "unbanip", "2001:db8::/32"]), Ok(Py::Int(1)));
        assert_eq!(cmd(&mut server, &["unban", "--all"]), Ok(Py::Int(2)));
        assert!(
            matches!(cmd(&mut server, &["get", "nope", "banip"]), Err(Py::Exception { name, .. }) if name == "UnknownJailException")
        );
        assert!(matches!(cmd(&mut server, &["frobnicate"]), Err(Py::Exception { name, .. }) if name == "Exception"));
    }
}
