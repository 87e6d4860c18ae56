//! A jail's bans in full (`get <jail> banip`), read in bounded memory.
//!
//! fail2ban 1.0.2 answers `get <jail> banip` with
//! `pickle.dumps((0, [IPAddr, …]), HIGHEST_PROTOCOL)`. Every ban is
//! pickled through `IPAddr.__reduce__` as `builtins.str('…')`, every
//! string, tuple and result is memoized, the items are appended in
//! batches of 1 000, and the whole is cut into frames of about 64 KiB:
//!
//! ```text
//! PROTO 5  FRAME n  BININT1 0  EMPTY_LIST MEMOIZE  MARK
//!   SHORT_BINUNICODE 'builtins' MEMOIZE  SHORT_BINUNICODE 'str' MEMOIZE  STACK_GLOBAL MEMOIZE
//!   SHORT_BINUNICODE '192.0.2.1' MEMOIZE  TUPLE1 MEMOIZE  REDUCE MEMOIZE
//!   BINGET 3  SHORT_BINUNICODE '198.51.100.0/24' MEMOIZE  TUPLE1 MEMOIZE  REDUCE MEMOIZE
//!   …  APPENDS  MARK  …  APPENDS
//! TUPLE2 MEMOIZE STOP
//! ```
//!
//! A jail of 1 000 000 bans is a reply of 27 MB (short IPv6 addresses) to
//! 48 MB (full ones). The general decoder ([`super::codec`]) would build
//! the pickle machine's graph for it first (hundreds of bytes per ban),
//! so its limits stop far below. This one reply is decoded by a machine
//! of its own, while it is read:
//!
//! * each string becomes an [`IpNet`] at once ([`canonical_ban`]); no
//!   string and no tree of values is kept, only the addresses;
//! * the pickle's memo keeps only what fail2ban refers back to (the class
//!   `builtins.str` and the strings that name it); memo entries of the
//!   bans themselves are counted, not kept, and a reply that refers back
//!   to one is refused (fail2ban's never do: every ban is its own object);
//! * strings too long to be an address are skipped as they stream, not
//!   buffered;
//! * the reply has bounds of its own: [`MAX_BAN_LIST_BYTES`] and
//!   [`MAX_BAN_LIST_ITEMS`]; past either the decoding stops with an error
//!   (never a truncated set);
//! * a reply that is not `(0, [ … ])` (an exception, `ERROR: …`,
//!   `['SHUTDOWN']`) is recognised from its first bytes and handed to the
//!   general decoder under its usual limits.
//!
//! Memory is the addresses (18 bytes each, [`IpNet`]), the growth of
//! their vector, and one read buffer.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::codec::{self, DecodeError, END, MAX_REPLY_BYTES, PyValue, Reply};

/// Largest reply to `get <jail> banip` read (the end marker aside):
/// 2 000 000 full IPv6 addresses are 96 MB (48 bytes a ban), networks
/// with the longest text 116 MB.
pub const MAX_BAN_LIST_BYTES: usize = 128 * 1024 * 1024;
/// Most items in the list (addresses, networks and unreadable ones).
pub const MAX_BAN_LIST_ITEMS: usize = 2_000_000;
/// Values on the pickle machine's stack at once. fail2ban appends in
/// batches of 1 000 items.
const MAX_STACK: usize = 10_000;
/// Open marks at once (fail2ban's replies use one).
const MAX_MARKS: usize = 64;
/// Memo entries kept (fail2ban's replies refer back to one).
const MAX_KEPT_MEMO: usize = 1024;
/// Longest string decoded; longer ones cannot be an address and are
/// skipped (`ffff:…:255.255.255.255/128` is 49 bytes).
const MAX_TEXT: usize = 64;
/// Longest line of a `GLOBAL` opcode (module or class name).
const MAX_LINE: usize = 256;

/// Every ban of a jail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailBans {
    /// Canonical ([`canonical_ban`]), sorted, no duplicates.
    pub bans: Vec<IpNet>,
    /// Items that were neither an address nor a network (fail2ban keeps
    /// whatever `banip` was given that it could not parse, e.g. a host
    /// name).
    pub unreadable: u64,
}

impl JailBans {
    /// Sorts and removes duplicates (CPU-heavy for large jails: run it off
    /// the async runtime).
    pub fn normalize(mut self) -> Self {
        self.bans.sort_unstable();
        self.bans.dedup();
        self
    }

    /// The bans of a reply the general decoder read (a small one that did
    /// not start as fail2ban's replies do).
    fn from_value(value: PyValue) -> Result<Self, BanListError> {
        let PyValue::List(items) = value else {
            return Err(BanListError::Shape("the reply to banip is not a list".into()));
        };
        let mut bans = JailBans::default();
        for item in items {
            match item.as_str().and_then(canonical_ban) {
                Some(net) => bans.bans.push(net),
                None => bans.unreadable += 1,
            }
        }
        Ok(bans)
    }
}

/// One ban as fail2ban prints it (`192.0.2.1`, `2001:db8::/32`,
/// `::ffff:192.0.2.1`), canonical: an IPv4-mapped IPv6 address or network
/// as IPv4, host bits cleared, a single address as /32 or /128. `None`
/// for anything else (no surrounding spaces, no zone).
pub fn canonical_ban(text: &str) -> Option<IpNet> {
    let net = if text.contains('/') { text.parse::<IpNet>().ok()? } else { IpNet::from(text.parse::<IpAddr>().ok()?) };
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => net,
        },
        _ => net,
    };
    Some(net.trunc())
}

/// The text fail2ban keys a ban by (`IPAddr.ntoa`): a single address
/// without a prefix (`192.0.2.1`, not `192.0.2.1/32`), a network with one,
/// IPv6 as glibc writes it (an IPv4-compatible address as `::a.b.c.d`).
/// `set <jail> unbanip` finds a ban only by this text: fail2ban looks the
/// ban up by the hash of the string it was sent, so `unbanip
/// 192.0.2.1/32` unbans nothing (and answers 0).
pub fn ban_text(net: &IpNet) -> String {
    match net {
        IpNet::V4(v4) if v4.prefix_len() == 32 => v4.addr().to_string(),
        IpNet::V4(v4) => v4.to_string(),
        IpNet::V6(v6) => {
            let addr = v6.addr();
            let s = addr.segments();
            let text = if s[..6] == [0; 6] && s[6] != 0 {
                let [.., a, b, c, d] = addr.octets();
                format!("::{a}.{b}.{c}.{d}")
            } else {
                addr.to_string()
            };
            if v6.prefix_len() == 128 { text } else { format!("{text}/{}", v6.prefix_len()) }
        }
    }
}

/// Why a ban list could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BanListError {
    #[error("reply over the {MAX_BAN_LIST_BYTES}-byte limit of a jail's ban list")]
    TooLarge,
    #[error("more than {MAX_BAN_LIST_ITEMS} bans in one jail (the limit of a jail's ban list)")]
    TooManyItems,
    #[error("reply is not a ban list this service reads: {0}")]
    Pickle(String),
    #[error("reply has an unexpected shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl BanListError {
    /// Over a bound (as opposed to: malformed).
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self,
            BanListError::TooLarge | BanListError::TooManyItems | BanListError::Decode(DecodeError::TooLarge(_))
        )
    }
}

/// What fail2ban answered `get <jail> banip`.
#[derive(Debug, PartialEq)]
pub enum BanListReply {
    /// The bans, not yet sorted ([`JailBans::normalize`]).
    Bans(JailBans),
    /// Not a list: an exception, a server error or shutdown (never
    /// [`Reply::Ok`]).
    Other(Reply),
}

/// Whether [`BanListDecoder::feed`] needs more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    More,
    /// The end marker was read: call [`BanListDecoder::finish`].
    Done,
}

/// A value on the machine's stack: only what a ban list needs to tell
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    /// The reply's code (0).
    Code,
    /// The reply's list.
    List,
    /// `(0, list)`.
    Top,
    /// An address or network.
    Ban(IpNet),
    /// A string naming the class `str` (`builtins`, `__builtin__`, `str`, `unicode`).
    Word(Word),
    /// The class `builtins.str`.
    StrClass,
    /// Any other class.
    Class,
    /// A one-item tuple: the arguments of `builtins.str(…)`.
    Args(Option<IpNet>),
    /// Anything else (not an address).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Module,
    Name,
}

impl Val {
    fn is_kept_in_memo(self) -> bool {
        matches!(self, Val::Word(_) | Val::StrClass | Val::Class)
    }

    /// The reply's own structure, which only fixed opcodes may consume.
    fn is_frame(self) -> bool {
        matches!(self, Val::Code | Val::List | Val::Top)
    }
}

/// A string's value.
fn text_value(bytes: &[u8]) -> Val {
    let Ok(text) = std::str::from_utf8(bytes) else { return Val::Other };
    if let Some(net) = canonical_ban(text) {
        return Val::Ban(net);
    }
    match text {
        "builtins" | "__builtin__" => Val::Word(Word::Module),
        "str" | "unicode" => Val::Word(Word::Name),
        _ => Val::Other,
    }
}

#[derive(Debug)]
enum Phase {
    /// Before the reply's shape is known; the bytes so far.
    Start(Vec<u8>),
    /// Inside `(0, [ … ])`.
    List,
    /// After `STOP`: this much of the end marker was read.
    End(usize),
    /// Not a ban list: the whole reply, for the general decoder.
    Other(Vec<u8>),
    /// The end marker was read.
    Done(Option<BanListReply>),
}

/// Decodes the reply to `get <jail> banip` from its bytes as they arrive
/// (see the module's documentation).
#[derive(Debug)]
pub struct BanListDecoder {
    phase: Phase,
    /// Bytes not yet decoded (an opcode cut by a read).
    pending: Vec<u8>,
    /// Bytes of a long string still to skip.
    skip: u64,
    received: usize,
    stack: Vec<Val>,
    marks: Vec<usize>,
    /// Memo entries kept (index, value); others are only counted.
    memo: Vec<(u64, Val)>,
    memo_len: u64,
    items: usize,
    bans: JailBans,
}

impl Default for BanListDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BanListDecoder {
    pub fn new() -> Self {
        Self {
            phase: Phase::Start(Vec::new()),
            pending: Vec::new(),
            skip: 0,
            received: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_len: 0,
            items: 0,
            bans: JailBans::default(),
        }
    }

    /// Items read so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Takes the next bytes of the reply, end marker included.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, BanListError> {
        self.received = self.received.saturating_add(bytes.len());
        if self.received > MAX_BAN_LIST_BYTES + END.len() {
            return Err(BanListError::TooLarge);
        }
        match &mut self.phase {
            Phase::Start(kept) => {
                kept.extend_from_slice(bytes);
                match start_of(kept) {
                    Start::Wait => Ok(Fed::More),
                    Start::BanList(body) => {
                        let rest = kept[body..].to_vec();
                        self.phase = Phase::List;
                        self.stack = vec![Val::Code, Val::List];
                        self.run_on(&rest)
                    }
                    Start::Other => {
                        let kept = std::mem::take(kept);
                        self.phase = Phase::Other(Vec::new());
                        self.other(&kept)
                    }
                }
            }
            Phase::Other(_) => self.other(bytes),
            Phase::List | Phase::End(_) => self.run_on(bytes),
            Phase::Done(_) => Err(BanListError::Pickle("bytes after the reply's end marker".into())),
        }
    }

    /// The reply, once [`BanListDecoder::feed`] said [`Fed::Done`].
    pub fn finish(mut self) -> Result<BanListReply, BanListError> {
        match &mut self.phase {
            Phase::Done(reply) => {
                reply.take().ok_or_else(|| BanListError::Pickle("the reply was already taken".into()))
            }
            _ => Err(BanListError::Pickle("the reply ended early".into())),
        }
    }

    /// Keeps a reply that is not a ban list, up to the general limit.
    fn other(&mut self, bytes: &[u8]) -> Result<Fed, BanListError> {
        let Phase::Other(body) = &mut self.phase else { return Ok(Fed::More) };
        body.extend_from_slice(bytes);
        if body.len() > MAX_REPLY_BYTES + END.len() {
            return Err(DecodeError::TooLarge(body.len() - END.len()).into());
        }
        if !body.ends_with(END) {
            return Ok(Fed::More);
        }
        body.truncate(body.len() - END.len());
        let reply = match codec::decode_reply(body)? {
            Reply::Ok(value) => BanListReply::Bans(JailBans::from_value(value)?),
            other => BanListReply::Other(other),
        };
        self.phase = Phase::Done(Some(reply));
        Ok(Fed::Done)
    }

    fn run_on(&mut self, bytes: &[u8]) -> Result<Fed, BanListError> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let used = self.run(&buf)?;
        buf.drain(..used);
        self.pending = buf;
        Ok(if matches!(self.phase, Phase::Done(_)) { Fed::Done } else { Fed::More })
    }

    /// Runs the opcodes complete in `buf`; returns the bytes used.
    fn run(&mut self, buf: &[u8]) -> Result<usize, BanListError> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(buf.len() - pos);
                pos += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(pos);
                }
            }
            if let Phase::End(matched) = &mut self.phase {
                for &byte in &buf[pos..] {
                    if *matched == END.len() {
                        return Err(BanListError::Pickle("bytes after the reply's end marker".into()));
                    }
                    if byte != END[*matched] {
                        return Err(BanListError::Pickle("the pickle's end is not followed by the end marker".into()));
                    }
                    *matched += 1;
                }
                if *matched == END.len() {
                    let bans = std::mem::take(&mut self.bans);
                    self.phase = Phase::Done(Some(BanListReply::Bans(bans)));
                }
                return Ok(buf.len());
            }
            let rest = &buf[pos..];
            match self.step(rest)? {
                Some(used) => pos += used,
                None => return Ok(pos),
            }
        }
    }

    fn push(&mut self, value: Val) -> Result<(), BanListError> {
        if self.stack.len() >= MAX_STACK {
            return Err(BanListError::Pickle(format!("more than {MAX_STACK} values on the pickle's stack")));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Result<Val, BanListError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(BanListError::Pickle("an opcode takes a value the stack does not have".into()));
        }
        match self.stack.pop() {
            Some(value) if value.is_frame() => {
                Err(BanListError::Shape("the list is not where fail2ban puts it".into()))
            }
            Some(value) => Ok(value),
            None => Err(BanListError::Pickle("empty stack".into())),
        }
    }

    fn pop_mark(&mut self) -> Result<usize, BanListError> {
        self.marks.pop().ok_or_else(|| BanListError::Pickle("no mark to end".into()))
    }

    fn add_items(&mut self, from: usize) -> Result<(), BanListError> {
        if from == 0 || self.stack.get(from - 1) != Some(&Val::List) {
            return Err(BanListError::Shape("items appended to something other than the reply's list".into()));
        }
        let count = self.stack.len() - from;
        self.items += count;
        if self.items > MAX_BAN_LIST_ITEMS {
            return Err(BanListError::TooManyItems);
        }
        for value in self.stack.drain(from..) {
            match value {
                Val::Ban(net) => self.bans.bans.push(net),
                v if v.is_frame() => {
                    return Err(BanListError::Shape("the reply's list contains itself".into()));
                }
                _ => self.bans.unreadable += 1,
            }
        }
        Ok(())
    }

    fn remember(&mut self, index: u64) -> Result<(), BanListError> {
        let top = *self.stack.last().ok_or_else(|| BanListError::Pickle("memo of an empty stack".into()))?;
        self.memo_len = self.memo_len.max(index.saturating_add(1));
        if top.is_kept_in_memo() {
            if self.memo.len() >= MAX_KEPT_MEMO {
                return Err(BanListError::Pickle(format!("more than {MAX_KEPT_MEMO} classes in the memo")));
            }
            self.memo.retain(|(i, _)| *i != index);
            self.memo.push((index, top));
        } else {
            // A later entry at this index replaces a kept one.
            self.memo.retain(|(i, _)| *i != index);
        }
        Ok(())
    }

    fn recall(&mut self, index: u64) -> Result<(), BanListError> {
        match self.memo.iter().rev().find(|(i, _)| *i == index) {
            Some(&(_, value)) => self.push(value),
            None => Err(BanListError::Pickle(format!(
                "the reply refers back to memo entry {index}, which fail2ban's ban lists never do"
            ))),
        }
    }

    /// Decodes one opcode at the start of `input`; `None` when it is not
    /// complete yet.
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, BanListError> {
        let Some(&op) = input.first() else { return Ok(None) };
        // The opcode's argument, once it is all there.
        let arg = |n: usize| input.get(1..1 + n);
        let uint = |n: usize| -> Option<u64> {
            let bytes = arg(n)?;
            let mut buf = [0u8; 8];
            buf[..n].copy_from_slice(bytes);
            Some(u64::from_le_bytes(buf))
        };
        let used = match op {
            // PROTO, FRAME (a hint for buffered readers)
            0x80 => arg(1).map(|_| 2),
            0x95 => arg(8).map(|_| 9),
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(BanListError::Pickle("marks nested too deep".into()));
                }
                self.marks.push(self.stack.len());
                Some(1)
            }
            b'a' => {
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() <= floor {
                    return Err(BanListError::Pickle("APPEND without an item".into()));
                }
                let from = self.stack.len() - 1;
                self.add_items(from)?;
                Some(1)
            }
            b'e' => {
                let from = self.pop_mark()?;
                self.add_items(from)?;
                Some(1)
            }
            // Strings: an address, a class's name, or neither.
            0x8c | b'X' | 0x8d | b'U' | b'T' => {
                let size = match op {
                    0x8c | b'U' => 1,
                    b'X' | b'T' => 4,
                    _ => 8,
                };
                let Some(len) = uint(size) else { return Ok(None) };
                let head = 1 + size;
                match usize::try_from(len) {
                    Ok(n) if n <= MAX_TEXT => match input.get(head..head + n) {
                        Some(bytes) => {
                            self.push(text_value(bytes))?;
                            Some(head + n)
                        }
                        None => None,
                    },
                    _ => {
                        self.push(Val::Other)?;
                        self.skip = len;
                        Some(head)
                    }
                }
            }
            // Bytes: never an address.
            b'C' | b'B' | 0x8e => {
                let size = match op {
                    b'C' => 1,
                    b'B' => 4,
                    _ => 8,
                };
                let Some(len) = uint(size) else { return Ok(None) };
                self.push(Val::Other)?;
                self.skip = len;
                Some(1 + size)
            }
            // Numbers, None, bools: not an address.
            b'K' | b'M' | b'J' | b'G' | b'N' | 0x88 | 0x89 | 0x8a => {
                let size = match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    b'G' => 8,
                    0x8a => match arg(1) {
                        Some(n) => 1 + usize::from(n[0]),
                        None => return Ok(None),
                    },
                    _ => 0,
                };
                if input.len() < 1 + size {
                    return Ok(None);
                }
                self.push(Val::Other)?;
                Some(1 + size)
            }
            b')' => {
                self.push(Val::Other)?;
                Some(1)
            }
            0x85 => {
                let item = self.pop()?;
                self.push(match item {
                    Val::Ban(net) => Val::Args(Some(net)),
                    _ => Val::Args(None),
                })?;
                Some(1)
            }
            0x86 => {
                if self.marks.is_empty() && self.stack == [Val::Code, Val::List] {
                    self.stack = vec![Val::Top];
                } else {
                    self.pop()?;
                    self.pop()?;
                    self.push(Val::Other)?;
                }
                Some(1)
            }
            0x87 => {
                for _ in 0..3 {
                    self.pop()?;
                }
                self.push(Val::Other)?;
                Some(1)
            }
            b't' => {
                let from = self.pop_mark()?;
                if self.stack[from..].iter().any(|v| v.is_frame()) {
                    return Err(BanListError::Shape("the list is not where fail2ban puts it".into()));
                }
                self.stack.truncate(from);
                self.push(Val::Other)?;
                Some(1)
            }
            b'c' => {
                let Some(global) = two_lines(&input[1..])? else { return Ok(None) };
                self.push(class_of(global.module, global.name))?;
                Some(1 + global.len)
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                self.push(match (module, name) {
                    (Val::Word(Word::Module), Val::Word(Word::Name)) => Val::StrClass,
                    _ => Val::Class,
                })?;
                Some(1)
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(match (callable, args) {
                    (Val::StrClass, Val::Args(Some(net))) => Val::Ban(net),
                    (Val::StrClass | Val::Class, _) => Val::Other,
                    _ => return Err(BanListError::Pickle("REDUCE of something that is not a class".into())),
                })?;
                Some(1)
            }
            0x94 => {
                let index = self.memo_len;
                self.remember(index)?;
                Some(1)
            }
            b'q' | b'r' => {
                let size = if op == b'q' { 1 } else { 4 };
                let Some(index) = uint(size) else { return Ok(None) };
                self.remember(index)?;
                Some(1 + size)
            }
            b'h' | b'j' => {
                let size = if op == b'h' { 1 } else { 4 };
                let Some(index) = uint(size) else { return Ok(None) };
                self.recall(index)?;
                Some(1 + size)
            }
            b'0' => {
                self.pop()?;
                Some(1)
            }
            b'1' => {
                let from = self.pop_mark()?;
                if self.stack[from..].iter().any(|v| v.is_frame()) {
                    return Err(BanListError::Shape("the list is not where fail2ban puts it".into()));
                }
                self.stack.truncate(from);
                Some(1)
            }
            b'2' => {
                let top = self.pop()?;
                self.push(top)?;
                self.push(top)?;
                Some(1)
            }
            b'.' => {
                if self.stack != [Val::Top] || !self.marks.is_empty() {
                    return Err(BanListError::Shape("the pickle ends before `(0, [ … ])` is complete".into()));
                }
                self.phase = Phase::End(0);
                Some(1)
            }
            other => {
                return Err(BanListError::Pickle(format!(
                    "opcode 0x{other:02x}, which fail2ban's ban lists do not use"
                )));
            }
        };
        Ok(used)
    }
}

/// The class a `GLOBAL` names.
fn class_of(module: &[u8], name: &[u8]) -> Val {
    match (module, name) {
        (b"builtins" | b"__builtin__", b"str" | b"unicode") => Val::StrClass,
        _ => Val::Class,
    }
}

/// The argument of a `GLOBAL` opcode: `module\nname\n`.
struct GlobalName<'a> {
    module: &'a [u8],
    name: &'a [u8],
    /// Bytes both lines take.
    len: usize,
}

/// The `GLOBAL` argument at the start of `input`; `None` when it is not
/// complete yet.
fn two_lines(input: &[u8]) -> Result<Option<GlobalName<'_>>, BanListError> {
    let line = |from: usize| -> Result<Option<usize>, BanListError> {
        let window = &input[from.min(input.len())..];
        match window.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
            Some(end) => Ok(Some(from + end)),
            None if window.len() > MAX_LINE => Err(BanListError::Pickle("a GLOBAL name is too long".into())),
            None => Ok(None),
        }
    };
    let Some(first) = line(0)? else { return Ok(None) };
    let Some(second) = line(first + 1)? else { return Ok(None) };
    Ok(Some(GlobalName { module: &input[..first], name: &input[first + 1..second], len: second + 1 }))
}

enum Start {
    /// Not enough bytes to tell.
    Wait,
    /// `(0, [`: the list's items start at this offset.
    BanList(usize),
    Other,
}

/// Tells fail2ban's `(0, [ … ])` from any other reply by its first bytes:
/// `PROTO n`, an optional `FRAME`, `BININT1 0`, `EMPTY_LIST`.
fn start_of(bytes: &[u8]) -> Start {
    let mut pos = 0;
    let expect = |pos: usize, want: u8| bytes.get(pos).map(|&b| b == want);
    match expect(pos, 0x80) {
        None => return Start::Wait,
        Some(false) => return Start::Other,
        Some(true) => pos += 2,
    }
    match bytes.get(pos) {
        None => return Start::Wait,
        Some(0x95) => pos += 9,
        Some(_) => {}
    }
    for want in [b'K', 0, b']'] {
        match expect(pos, want) {
            None => return Start::Wait,
            Some(false) => return Start::Other,
            Some(true) => pos += 1,
        }
    }
    Start::BanList(pos)
}

#[cfg(test)]
mod tests;
