//! fail2ban's socket protocol, for a fail2ban of our own
//! ([`crate::fake_fail2ban`]) and for tests that speak it directly.
//!
//! [`dumps`] writes a Python value byte for byte as fail2ban 1.0.2 does:
//! `pickle.dumps(value, HIGHEST_PROTOCOL)` of CPython 3.11's C pickler
//! (protocol 5). That means its framing (a frame is closed at the start of
//! the first object saved once it holds 64 KiB; a frame under 4 bytes gets
//! no header; a string of 64 KiB or more is written outside any frame),
//! its memo (every string, tuple, list, dict, class and reduced object is
//! memoized, and only a class is ever saved twice, as `BINGET`), batches
//! of 1 000 in lists and dicts, and fail2ban's `IPAddr.__reduce__`, which
//! pickles an address as `builtins.str('…')`.
//!
//! [`loads_request`] reads a request: a pickled list of strings, as
//! fail2ban-client and the control-service send it.

use std::{collections::HashMap, io};

/// Ends every request and reply.
pub const END: &[u8] = b"<F2B_END_COMMAND>";
/// Asks the server to close the connection.
pub const CLOSE: &[u8] = b"<F2B_CLOSE_COMMAND>";

/// A Python value as fail2ban's replies hold them.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A string that is one object wherever it appears in a reply (a
    /// jail's name): saved once, then fetched from the memo.
    Shared(String),
    /// fail2ban's `IPAddr` (or a ban's raw id): `builtins.str(text)`.
    Ip(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    /// A dict, in insertion order.
    Dict(Vec<(Py, Py)>),
    /// An exception object, e.g. `fail2ban.exceptions.UnknownJailException('x')`.
    Exception {
        module: String,
        name: String,
        args: Vec<Py>,
    },
}

impl Py {
    pub fn str(text: impl Into<String>) -> Self {
        Py::Str(text.into())
    }

    /// `(name, value)`, fail2ban's status pairs.
    pub fn pair(name: &str, value: Py) -> Self {
        Py::Tuple(vec![Py::str(name), value])
    }

    /// `builtins.Exception(message)`.
    pub fn exception(module: &str, name: &str, message: impl Into<String>) -> Self {
        Py::Exception { module: module.into(), name: name.into(), args: vec![Py::Str(message.into())] }
    }
}

/// A successful reply: `(0, value)`.
pub fn ok_reply(value: Py) -> Vec<u8> {
    dumps(&Py::Tuple(vec![Py::Int(0), value]))
}

/// A failed command: `(1, exception)`.
pub fn error_reply(exception: Py) -> Vec<u8> {
    dumps(&Py::Tuple(vec![Py::Int(1), exception]))
}

const FRAME_SIZE_TARGET: usize = 64 * 1024;
const FRAME_SIZE_MIN: usize = 4;
const FRAME_HEADER: usize = 9;
const BATCH: usize = 1000;

/// `pickle.dumps(value, 5)` as CPython 3.11's C pickler writes it.
pub fn dumps(value: &Py) -> Vec<u8> {
    let mut pickler = Pickler::new();
    pickler.save(value);
    pickler.write(b".");
    pickler.commit_frame();
    pickler.out
}

/// fail2ban's reply to `get <jail> banip` for `count` bans, the `i`-th
/// shown as `ban(i)`, written to `sink` a frame at a time (about 64 KiB
/// held, whatever `count`): the bytes of
/// `ok_reply(Py::List((0..count).map(|i| Py::Ip(ban(i))).collect()))`,
/// without the end marker.
pub fn write_ban_list_reply(count: usize, ban: impl Fn(usize) -> String, sink: &mut impl io::Write) -> io::Result<()> {
    let mut pickler = Pickler::new();
    pickler.boundary();
    pickler.save(&Py::Int(0));
    pickler.boundary();
    pickler.write(b"]");
    pickler.memoize();
    let mut flushed = Ok(());
    pickler.save_batched(count, b'a', b'e', |p, i| {
        p.save(&Py::Ip(ban(i)));
        // Everything before the open frame is final.
        if let Some(start) = p.frame_start
            && start > 0
            && flushed.is_ok()
        {
            flushed = sink.write_all(&p.out[..start]);
            p.out.drain(..start);
            p.frame_start = Some(0);
        }
    });
    flushed?;
    pickler.write(&[0x86]);
    pickler.memoize();
    pickler.write(b".");
    pickler.commit_frame();
    sink.write_all(&pickler.out)
}

/// What the memo can give back: the only objects a reply saves twice are
/// classes and the interned strings that name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shared {
    Name(String),
    Class(String, String),
    Object(String),
}

#[derive(Debug)]
struct Pickler {
    out: Vec<u8>,
    framing: bool,
    frame_start: Option<usize>,
    memo_len: u32,
    memo: HashMap<Shared, u32>,
}

impl Pickler {
    fn new() -> Self {
        Self { out: vec![0x80, 5], framing: true, frame_start: None, memo_len: 0, memo: HashMap::new() }
    }

    /// `_Pickler_Write`: opens a frame when none is open.
    fn write(&mut self, bytes: &[u8]) {
        if self.framing && self.frame_start.is_none() {
            self.frame_start = Some(self.out.len());
            self.out.extend_from_slice(&[0; FRAME_HEADER]);
        }
        self.out.extend_from_slice(bytes);
    }

    fn commit_frame(&mut self) {
        let Some(start) = self.frame_start.take() else { return };
        let len = self.out.len() - start - FRAME_HEADER;
        if len >= FRAME_SIZE_MIN {
            self.out[start] = 0x95;
            self.out[start + 1..start + FRAME_HEADER].copy_from_slice(&(len as u64).to_le_bytes());
        } else {
            self.out.drain(start..start + FRAME_HEADER);
        }
    }

    /// `_Pickler_OpcodeBoundary`, at the start of every `save`.
    fn boundary(&mut self) {
        if let Some(start) = self.frame_start
            && self.out.len() - start - FRAME_HEADER >= FRAME_SIZE_TARGET
        {
            self.commit_frame();
        }
    }

    fn memoize(&mut self) -> u32 {
        self.write(&[0x94]);
        self.memo_len += 1;
        self.memo_len - 1
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.write(&[b'h', i]),
            Err(_) => {
                let mut op = vec![b'j'];
                op.extend_from_slice(&index.to_le_bytes());
                self.write(&op);
            }
        }
    }

    fn save(&mut self, value: &Py) {
        self.boundary();
        match value {
            Py::None => self.write(b"N"),
            Py::Bool(true) => self.write(&[0x88]),
            Py::Bool(false) => self.write(&[0x89]),
            Py::Int(n) => self.save_int(*n),
            Py::Float(f) => {
                let mut op = vec![b'G'];
                op.extend_from_slice(&f.to_be_bytes());
                self.write(&op);
            }
            Py::Str(text) => self.save_str(text),
            Py::Shared(text) => match self.memo.get(&Shared::Object(text.clone())) {
                Some(&index) => self.get(index),
                None => {
                    self.save_str(text);
                    self.memo.insert(Shared::Object(text.clone()), self.memo_len - 1);
                }
            },
            Py::Ip(text) => self.save_reduce("builtins", "str", std::slice::from_ref(&Py::str(text.clone()))),
            Py::Tuple(items) => self.save_tuple(items),
            Py::List(items) => {
                self.write(b"]");
                self.memoize();
                self.save_batched(items.len(), b'a', b'e', |p, i| p.save(&items[i]));
            }
            Py::Dict(entries) => {
                self.write(b"}");
                self.memoize();
                self.save_batched(entries.len(), b's', b'u', |p, i| {
                    p.save(&entries[i].0);
                    p.save(&entries[i].1);
                });
            }
            Py::Exception { module, name, args } => self.save_reduce(module, name, args),
        }
    }

    /// `batch_list_exact` / `batch_dict_exact`: one item with `one`,
    /// more in marked batches of 1 000 ended by `many`.
    fn save_batched(&mut self, len: usize, one: u8, many: u8, mut item: impl FnMut(&mut Self, usize)) {
        match len {
            0 => {}
            1 => {
                item(self, 0);
                self.write(&[one]);
            }
            _ => {
                let mut done = 0;
                while done < len {
                    self.write(b"(");
                    let end = (done + BATCH).min(len);
                    for i in done..end {
                        item(self, i);
                    }
                    done = end;
                    self.write(&[many]);
                }
            }
        }
    }

    fn save_int(&mut self, n: i64) {
        if let Ok(small) = u8::try_from(n) {
            self.write(&[b'K', small]);
        } else if let Ok(medium) = u16::try_from(n) {
            let mut op = vec![b'M'];
            op.extend_from_slice(&medium.to_le_bytes());
            self.write(&op);
        } else if let Ok(word) = i32::try_from(n) {
            let mut op = vec![b'J'];
            op.extend_from_slice(&word.to_le_bytes());
            self.write(&op);
        } else {
            // LONG1: the fewest little-endian two's-complement bytes.
            let bytes = n.to_le_bytes();
            let mut len = 8;
            while len > 1 {
                let (last, prev) = (bytes[len - 1], bytes[len - 2]);
                if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                    len -= 1;
                } else {
                    break;
                }
            }
            let mut op = vec![0x8a, len as u8];
            op.extend_from_slice(&bytes[..len]);
            self.write(&op);
        }
    }

    fn save_str(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut header = Vec::with_capacity(9);
        match u8::try_from(bytes.len()) {
            Ok(n) => header.extend_from_slice(&[0x8c, n]),
            Err(_) => match u32::try_from(bytes.len()) {
                Ok(n) => {
                    header.push(b'X');
                    header.extend_from_slice(&n.to_le_bytes());
                }
                Err(_) => {
                    header.push(0x8d);
                    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                }
            },
        }
        if bytes.len() >= FRAME_SIZE_TARGET {
            // `_Pickler_write_bytes`: a large payload goes outside frames.
            self.commit_frame();
            self.framing = false;
            self.write(&header);
            self.write(bytes);
            self.framing = true;
        } else {
            header.extend_from_slice(bytes);
            self.write(&header);
        }
        self.memoize();
    }

    /// A string that names a module or class: interned in Python, so
    /// saved once and then fetched from the memo.
    fn save_name(&mut self, name: &str) {
        self.boundary();
        match self.memo.get(&Shared::Name(name.to_owned())) {
            Some(&index) => self.get(index),
            None => {
                self.save_str(name);
                self.memo.insert(Shared::Name(name.to_owned()), self.memo_len - 1);
            }
        }
    }

    /// `save_global` at protocol 4 and later: `STACK_GLOBAL`, memoized.
    fn save_class(&mut self, module: &str, name: &str) {
        self.boundary();
        let key = Shared::Class(module.to_owned(), name.to_owned());
        if let Some(&index) = self.memo.get(&key) {
            self.get(index);
            return;
        }
        self.save_name(module);
        self.save_name(name);
        self.write(&[0x93]);
        let index = self.memoize();
        self.memo.insert(key, index);
    }

    /// `save_reduce(cls, args)`: the class, the argument tuple, `REDUCE`,
    /// and the object memoized.
    fn save_reduce(&mut self, module: &str, name: &str, args: &[Py]) {
        self.save_class(module, name);
        self.boundary();
        self.save_tuple_items(args);
        self.write(b"R");
        self.memoize();
    }

    fn save_tuple(&mut self, items: &[Py]) {
        self.save_tuple_items(items);
    }

    /// `save_tuple` (its `save` boundary already passed).
    fn save_tuple_items(&mut self, items: &[Py]) {
        match items.len() {
            0 => self.write(b")"),
            n @ 1..=3 => {
                for item in items {
                    self.save(item);
                }
                self.write(&[[0x85, 0x86, 0x87][n - 1]]);
                self.memoize();
            }
            _ => {
                self.write(b"(");
                for item in items {
                    self.save(item);
                }
                self.write(b"t");
                self.memoize();
            }
        }
    }
}

/// Why a request could not be read (fail2ban answers `ERROR: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Reads a request: a pickled list of strings (any protocol from 2 on,
/// framed or not, memoized or not).
pub fn loads_request(body: &[u8]) -> Result<Vec<String>, LoadError> {
    let bad = |what: &str| LoadError(what.to_owned());
    let mut pos = 0;
    let mut list: Option<Vec<String>> = None;
    let mut stack: Vec<String> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, Option<String>> = HashMap::new();
    // What the top of the stack is: a string, or the list itself.
    let mut top_is_list = false;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], LoadError> {
        let bytes = body.get(*pos..*pos + n).ok_or_else(|| bad("pickle data was truncated"))?;
        *pos += n;
        Ok(bytes)
    };
    let uint = |bytes: &[u8]| {
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(buf)
    };
    loop {
        let op = take(&mut pos, 1)?[0];
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b']' => {
                if list.is_some() {
                    return Err(bad("a request is one list"));
                }
                list = Some(Vec::new());
                top_is_list = true;
            }
            b'(' => marks.push(stack.len()),
            0x8c | b'X' | 0x8d | b'U' | b'T' => {
                let size = match op {
                    0x8c | b'U' => 1,
                    b'X' | b'T' => 4,
                    _ => 8,
                };
                let len = usize::try_from(uint(take(&mut pos, size)?)).map_err(|_| bad("string too long"))?;
                let text = std::str::from_utf8(take(&mut pos, len)?).map_err(|_| bad("a string is not UTF-8"))?;
                stack.push(text.to_owned());
                top_is_list = false;
            }
            0x94 | b'q' | b'r' => {
                let index = match op {
                    0x94 => memo.len() as u64,
                    b'q' => uint(take(&mut pos, 1)?),
                    _ => uint(take(&mut pos, 4)?),
                };
                let value = if top_is_list { None } else { stack.last().cloned() };
                memo.insert(index, value);
            }
            b'h' | b'j' => {
                let index = uint(take(&mut pos, if op == b'h' { 1 } else { 4 })?);
                match memo.get(&index) {
                    Some(Some(text)) => {
                        stack.push(text.clone());
                        top_is_list = false;
                    }
                    _ => return Err(bad("a memo reference this reader does not follow")),
                }
            }
            b'a' => {
                let item = stack.pop().ok_or_else(|| bad("APPEND without an item"))?;
                list.as_mut().ok_or_else(|| bad("APPEND without a list"))?.push(item);
                top_is_list = true;
            }
            b'e' => {
                let from = marks.pop().ok_or_else(|| bad("APPENDS without a mark"))?;
                let items = stack.drain(from.min(stack.len())..);
                list.as_mut().ok_or_else(|| bad("APPENDS without a list"))?.extend(items);
                top_is_list = true;
            }
            b'.' => {
                return match (list, stack.is_empty() && marks.is_empty()) {
                    (Some(list), true) => Ok(list),
                    _ => Err(bad("a request is a list of strings")),
                };
            }
            other if other.is_ascii_graphic() || other == b' ' => {
                return Err(LoadError(format!("invalid load key, '{}'.", char::from(other))));
            }
            other => return Err(LoadError(format!("invalid load key, '\\x{other:02x}'."))),
        }
    }
}

/// `request + END`: a command as fail2ban-client sends it
/// (`pickle.dumps(list_of_str, HIGHEST_PROTOCOL)`).
pub fn request(args: &[&str]) -> Vec<u8> {
    let mut out = dumps(&Py::List(args.iter().map(|a| Py::str(*a)).collect()));
    out.extend_from_slice(END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Replies captured from fail2ban 1.0.2 (Python 3.11).
    #[test]
    fn small_replies_match_fail2ban_byte_for_byte() {
        let cases: [(Vec<u8>, &str); 9] = [
            (ok_reply(Py::str("pong")), "8005950c000000000000004b008c04706f6e679486942e"),
            (ok_reply(Py::Int(3600)), "80059508000000000000004b004d100e86942e"),
            // Python 3.11: pickle.dumps((0, -1), 5).
            (ok_reply(Py::Int(-1)), "8005950a000000000000004b004affffffff86942e"),
            (ok_reply(Py::Bool(true)), "80059506000000000000004b008886942e"),
            (ok_reply(Py::List(vec![])), "80059507000000000000004b005d9486942e"),
            (ok_reply(Py::List(vec![Py::str("dummy")])), "80059510000000000000004b005d948c0564756d6d79946186942e"),
            (
                ok_reply(Py::List(vec![Py::Ip("10.0.0.0/8".into())])),
                "8005952c000000000000004b005d948c086275696c74696e73948c037374729493948c0a31302e302e302e302f3894859452946186942e",
            ),
            (
                error_reply(Py::exception("fail2ban.exceptions", "UnknownJailException", "nope")),
                "8005953f000000000000004b018c136661696c3262616e2e657863657074696f6e73948c14556e6b6e6f776e4a61696c457863657074696f6e9493948c046e6f7065948594529486942e",
            ),
            (
                ok_reply(Py::List(vec![
                    Py::pair("Number of jail", Py::Int(3)),
                    Py::pair("Jail list", Py::str("alpha, beta, blocklist-import")),
                ])),
                "8005954c000000000000004b005d94288c0e4e756d626572206f66206a61696c944b0386948c094a61696c206c697374948c1d616c7068612c20626574612c20626c6f636b6c6973742d696d706f72749486946586942e",
            ),
        ];
        for (made, captured) in cases {
            assert_eq!(hex(&made), captured);
        }
        // No frame for a pickle of under 4 bytes.
        assert_eq!(hex(&dumps(&Py::None)), "80054e2e");
        assert_eq!(hex(&dumps(&Py::Int(1 << 40))), "80059509000000000000008a060000000000012e");
        assert_eq!(hex(&dumps(&Py::Int(70000))), "80059506000000000000004a701101002e");
    }

    /// The `i`-th ban of [`large_replies_match_python`]: IPv4 addresses,
    /// full IPv6 addresses and IPv6 networks, all distinct.
    pub(crate) fn ban(i: usize) -> String {
        match i % 3 {
            0 => std::net::Ipv4Addr::from(0x0A00_0000 + i as u32).to_string(),
            1 => {
                format!("2001:db8:{:x}:{:x}:abcd:1234:5678:9abc", ((i >> 16) & 0xffff) | 0x1000, (i & 0xffff) | 0x1000)
            }
            _ => format!("2001:db8:{:x}:{:x}::/64", (i >> 15) + 1, (i & 0x7fff) + 1),
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(bytes))
    }

    /// Python 3.11 with fail2ban 1.0.2, as fail2ban answers `get <jail> banip`:
    /// `pickle.dumps((0, [IPAddr(ban(i)) for i in range(200000)]), pickle.HIGHEST_PROTOCOL)`
    /// is 6 399 221 bytes with this SHA-256. Its 98 frames end both before an
    /// item and between an item's class and its string.
    #[test]
    fn large_replies_match_python() {
        const PYTHON_LEN: usize = 6_399_221;
        const PYTHON_SHA256: &str = "2aa380ba94383780625baa18248a0649c2f5497140b2bf36c6f7ae905310102b";
        let bans: Vec<String> = (0..200_000).map(ban).collect();
        let made = ok_reply(Py::List(bans.iter().map(|b| Py::Ip(b.clone())).collect()));
        assert_eq!((made.len(), sha256(&made).as_str()), (PYTHON_LEN, PYTHON_SHA256));
        let mut streamed = Vec::new();
        write_ban_list_reply(bans.len(), |i| bans[i].clone(), &mut streamed).unwrap();
        assert!(streamed == made, "the streamed reply differs from dumps");
        for n in [0, 1, 2, 999, 1000, 1001, 5000] {
            let mut streamed = Vec::new();
            write_ban_list_reply(n, |i| bans[i].clone(), &mut streamed).unwrap();
            let made = ok_reply(Py::List(bans[..n].iter().map(|b| Py::Ip(b.clone())).collect()));
            assert!(streamed == made, "{n} bans");
        }

        // A string of 64 KiB or more is written outside frames:
        // pickle.dumps((0, ["x" * 70000, "y", IPAddr("1.2.3.4")]), 5).
        let long = ok_reply(Py::List(vec![Py::str("x".repeat(70_000)), Py::str("y"), Py::Ip("1.2.3.4".into())]));
        assert_eq!(
            (long.len(), sha256(&long).as_str()),
            (70_072, "9a436071b6b3239f19b1fd5954f8b4d8c5461abf0c365338da31fa92743db5f7")
        );
    }

    #[test]
    fn requests_of_python_and_of_the_control_service_load() {
        // pickle.dumps(['set', 'alpha', 'banip', '192.0.2.1'], 5)
        let python = b"\x80\x05\x95)\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x03set\x94\x8c\x05alpha\x94\x8c\x05banip\x94\x8c\t192.0.2.1\x94e.";
        assert_eq!(loads_request(python).unwrap(), ["set", "alpha", "banip", "192.0.2.1"]);
        // deser-pickle, as the control-service sends it.
        let service = b"\x80\x04](\x8c\x04ping\x8c\x01xe.";
        assert_eq!(loads_request(service).unwrap(), ["ping", "x"]);
        let made = request(&["status", "alpha"]);
        assert_eq!(loads_request(&made[..made.len() - END.len()]).unwrap(), ["status", "alpha"]);
        assert!(loads_request(b"not a pickle").is_err());
        assert!(loads_request(b"\x80\x05N.").is_err());
    }
}
