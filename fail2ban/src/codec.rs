//! fail2ban's wire format: pickled requests and replies, each followed by
//! an end marker (DESIGN.md section 3).
//!
//! A request is `pickle(list of str) + END`. A reply is
//! `pickle((code, value)) + END`: code 0 carries the value, code 1 an
//! exception object. fail2ban pickles every IP as `builtins.str(…)` via
//! REDUCE and exceptions as e.g. `fail2ban.exceptions.UnknownJailException('x')`.
//! A reply it could not produce is a bare `"ERROR: …"` string, and a server
//! that is shutting down answers `['SHUTDOWN']`.
//!
//! Replies are decoded by `deser-pickle`, which runs the pickle machine but
//! executes nothing: instead of importing and calling a class it records the
//! call. `builtins.str('1.2.3.4')` comes out as the string, an exception as
//! its class plus its arguments.
//!
//! A reply is untrusted input that can make memory out of nothing (a small
//! pickle can refer to one large string millions of times through its memo),
//! so every stage is bounded, and each bound is checked before the memory
//! it guards is taken:
//!
//! 1. the reply's size ([`MAX_REPLY_BYTES`], while it is read);
//! 2. the pickle machine's graph: the opcodes are walked first (nothing is
//!    built) and their cost estimated, at most [`MAX_MACHINE_BYTES`];
//! 3. the events the machine emits: nesting ([`MAX_DEPTH`]), events in total
//!    including repeats of shared values ([`MAX_EVENTS`]), items per list or
//!    dict ([`MAX_ITEMS`]), string and bytes length ([`MAX_STRING_BYTES`]),
//!    events of repeated memo values ([`MAX_SHARED_EVENTS`]) — deser's
//!    `Limits` and deser-pickle's `max_shared_events`;
//! 4. the decoded value itself: every string, list and dict is charged to a
//!    budget of [`MAX_DECODED_BYTES`] before it is allocated.
//!
//! The events are decoded once, straight into [`PyValue`] (no intermediate
//! tree).

use std::{borrow::Cow, sync::LazyLock};

use deser_core::{
    Atom, Context, Error as DeserError, ErrorKind, State,
    de::{Deserialize, Limits, Sink, SinkHandle},
};
use deser_pickle::{DeserializerConfig, Global};

/// Ends every request and reply.
pub const END: &[u8] = b"<F2B_END_COMMAND>";
/// Asks fail2ban to close the connection.
pub const CLOSE: &[u8] = b"<F2B_CLOSE_COMMAND>";
/// Largest reply accepted. `get <jail> banip --with-time` is the largest
/// reply the service asks for: 61 to 92 bytes per ban (a short IPv4 to a
/// full IPv6 address), so 10 MiB holds 114 000 to 170 000 bans of one jail
/// (`honest_large_reply_decodes` decodes the largest that fits).
pub const MAX_REPLY_BYTES: usize = 10 * 1024 * 1024;
/// Deepest nesting accepted; fail2ban's replies nest four levels at most.
pub const MAX_DEPTH: usize = 32;
/// Events (atoms, starts and ends of lists and dicts) of one reply, repeats
/// of shared values included.
pub const MAX_EVENTS: usize = 400_000;
/// Items of one list, or entries of one dict.
pub const MAX_ITEMS: usize = 300_000;
/// Longest string or bytes value.
pub const MAX_STRING_BYTES: usize = 1024 * 1024;
/// Events of values the pickle's memo makes appear again (fail2ban's own
/// replies repeat none).
pub const MAX_SHARED_EVENTS: usize = 100_000;
/// Estimated memory of the pickle machine's graph (see [`machine_cost`]).
pub const MAX_MACHINE_BYTES: usize = 40 * 1024 * 1024;
/// Memory of the decoded value: each value's size plus its text.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// What one opcode that makes a value may cost the machine: a node of its
/// graph (up to 120 bytes, a vector that doubles), its byte range (16), a
/// stack slot, and the emitter's per-node bookkeeping.
const NODE_OP_BYTES: usize = 160;
/// An opcode that only moves or remembers values (memo, stack, marks).
const REF_OP_BYTES: usize = 24;

/// A Python value from a reply, with classes other than `builtins.str`
/// kept only where they can matter (the exception at the top of an error
/// reply, see [`Reply::Exception`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A list, tuple, set or frozenset.
    List(Vec<PyValue>),
    /// A dict, in its pickled order.
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(n) => Some(*n),
            // Python's bool is an int.
            PyValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(items) => Some(items),
            _ => None,
        }
    }

    /// A list of strings (e.g. banned IPs, log paths).
    pub fn as_str_list(&self) -> Option<Vec<String>> {
        self.as_list()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
    }

    /// Takes a list of strings out of the value (no copy).
    pub fn into_str_list(self) -> Result<Vec<String>, PyValue> {
        match self {
            PyValue::List(items) if items.iter().all(|v| matches!(v, PyValue::Str(_))) => Ok(items
                .into_iter()
                .filter_map(|v| match v {
                    PyValue::Str(s) => Some(s),
                    _ => None,
                })
                .collect()),
            other => Err(other),
        }
    }
}

/// What fail2ban answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Code 0: the command's value.
    Ok(PyValue),
    /// Code 1: the command raised. `module`/`name` are the exception's class
    /// (`fail2ban.exceptions`/`UnknownJailException`, `builtins`/`Exception`),
    /// `args` its arguments (one argument is the value itself).
    Exception { module: String, name: String, args: PyValue },
    /// A bare `"ERROR: …"` string: fail2ban could not read the request or
    /// failed outside the command.
    ServerError(String),
    /// `['SHUTDOWN']`: the server is stopping.
    Shutdown,
}

impl Reply {
    /// The exception's message: its first string argument, or the arguments
    /// as Python would print them.
    pub fn exception_message(args: &PyValue) -> String {
        match args {
            PyValue::Str(s) => s.clone(),
            PyValue::List(items) if items.len() == 1 => Self::exception_message(&items[0]),
            other => format!("{other:?}"),
        }
    }
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("reply of {0} bytes is over the {MAX_REPLY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("reply nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("reply would build a pickle graph of about {0} bytes (limit {MAX_MACHINE_BYTES})")]
    MachineTooLarge(usize),
    #[error("reply decodes to more than {MAX_DECODED_BYTES} bytes")]
    DecodedTooLarge,
    #[error("reply is over a decoding limit: {0}")]
    Limit(String),
    #[error("reply is not a valid pickle: {0}")]
    Pickle(String),
    #[error("reply has an unexpected shape: {0}")]
    Shape(String),
}

/// Pickles a request: a list of strings, as fail2ban-client sends it.
pub fn encode_request(args: &[&str]) -> Result<Vec<u8>, String> {
    let mut out = deser_pickle::to_vec(&args.to_vec()).map_err(|e| e.to_string())?;
    out.extend_from_slice(END);
    Ok(out)
}

/// The decoder's configuration: deser's limits and deser-pickle's bound on
/// repeated values.
static CONFIG: LazyLock<DeserializerConfig> = LazyLock::new(|| {
    let limits = Limits::builder()
        .max_depth(MAX_DEPTH)
        .max_events(MAX_EVENTS)
        .max_items(MAX_ITEMS)
        .max_len(MAX_STRING_BYTES)
        .build();
    DeserializerConfig::builder().context(Context::with(limits)).max_shared_events(MAX_SHARED_EVENTS).build()
});

/// Decodes one reply body (without the end marker).
pub fn decode_reply(body: &[u8]) -> Result<Reply, DecodeError> {
    if body.len() > MAX_REPLY_BYTES {
        return Err(DecodeError::TooLarge(body.len()));
    }
    let cost = machine_cost(body)?;
    if cost > MAX_MACHINE_BYTES {
        return Err(DecodeError::MachineTooLarge(cost));
    }
    let Decoded { value, class } = CONFIG.from_slice::<Decoded>(body).map_err(decode_error)?;
    match value {
        PyValue::List(items) if items.len() == 2 && matches!(items[0], PyValue::Int(_)) => {
            let mut items = items.into_iter();
            let code = items.next().and_then(|v| v.as_int()).unwrap_or(-1);
            let value = items.next().unwrap_or(PyValue::None);
            match code {
                0 => Ok(Reply::Ok(value)),
                1 => Ok(match class {
                    Some(class) => Reply::Exception {
                        module: class.module().to_owned(),
                        name: class.name().to_owned(),
                        args: value,
                    },
                    // fail2ban always pickles an exception object; a plain value here
                    // is still an error, reported as what it says.
                    None => Reply::Exception { module: "builtins".into(), name: "Exception".into(), args: value },
                }),
                other => Err(DecodeError::Shape(format!("reply code {other} (expected 0 or 1)"))),
            }
        }
        PyValue::Str(text) if text.starts_with("ERROR") => Ok(Reply::ServerError(text)),
        PyValue::List(items) if items == [PyValue::Str("SHUTDOWN".into())] => Ok(Reply::Shutdown),
        other => Err(DecodeError::Shape(format!("expected (code, value), got {}", describe(&other)))),
    }
}

fn decode_error(error: DeserError) -> DecodeError {
    match error.kind() {
        ErrorKind::LimitExceeded if error.message().starts_with("recursion limit") => DecodeError::TooDeep,
        ErrorKind::LimitExceeded if error.message() == OVER_BUDGET => DecodeError::DecodedTooLarge,
        ErrorKind::LimitExceeded => DecodeError::Limit(error.to_string()),
        ErrorKind::InvalidType | ErrorKind::OutOfRange | ErrorKind::UnsupportedType
            if error.message().starts_with(SHAPE) =>
        {
            DecodeError::Shape(error.message()[SHAPE.len()..].to_owned())
        }
        _ => DecodeError::Pickle(error.to_string()),
    }
}

fn describe(value: &PyValue) -> &'static str {
    match value {
        PyValue::None => "None",
        PyValue::Bool(_) => "a bool",
        PyValue::Int(_) => "an int",
        PyValue::Float(_) => "a float",
        PyValue::Str(_) => "a string",
        PyValue::Bytes(_) => "bytes",
        PyValue::List(_) => "a sequence",
        PyValue::Dict(_) => "a dict",
    }
}

/// Walks the opcodes of a pickle without running it and estimates the
/// memory the pickle machine would need for its graph: every opcode that
/// makes a value costs [`NODE_OP_BYTES`], every other one
/// [`REF_OP_BYTES`]. The walk stops at `STOP`; a pickle that ends early
/// or has an unknown opcode is left to the machine to report.
pub fn machine_cost(input: &[u8]) -> Result<usize, DecodeError> {
    let mut pos = 0usize;
    let mut cost = 0usize;
    // The length of a counted argument of `size` bytes at `pos`.
    let counted = |pos: usize, size: usize| -> Option<usize> {
        let bytes = input.get(pos..pos.checked_add(size)?)?;
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(buf)).ok()
    };
    while let Some(&op) = input.get(pos) {
        pos += 1;
        let (cheap, skip) = match op {
            b'.' => break,
            // MARK, POP, POP_MARK, DUP, MEMOIZE, APPEND(S), SETITEM(S), ADDITEMS, BUILD
            b'(' | b'0' | b'1' | b'2' | 0x94 | b'a' | b'e' | b's' | b'u' | 0x90 | b'b' => (true, 0),
            // BINGET, BINPUT, PROTO
            b'h' | b'q' | 0x80 => (true, 1),
            // LONG_BINGET, LONG_BINPUT
            b'j' | b'r' => (true, 4),
            // FRAME
            0x95 => (true, 8),
            // GET, PUT: a line
            b'g' | b'p' => (true, line_len(input, pos, 1)),
            // NONE, tuples, empties, bools, REDUCE, NEWOBJ(_EX), OBJ, STACK_GLOBAL, sets, lists, dicts
            b'N' | b'Q' | b'R' | b'd' | b'}' | b'l' | b']' | b'o' | b't' | b')' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88
            | 0x89 | 0x8f | 0x91 | 0x92 | 0x93 | 0x97 | 0x98 => (false, 0),
            // BININT1, EXT1
            b'K' | 0x82 => (false, 1),
            // BININT2, EXT2
            b'M' | 0x83 => (false, 2),
            // BININT, EXT4
            b'J' | 0x84 => (false, 4),
            // BINFLOAT
            b'G' => (false, 8),
            // INT, LONG, FLOAT, STRING, UNICODE, PERSID: a line; GLOBAL, INST: two
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => (false, line_len(input, pos, 1)),
            b'c' | b'i' => (false, line_len(input, pos, 2)),
            // counted strings, bytes and longs
            b'U' | 0x8c | b'C' | 0x8a => (false, counted(pos, 1).map_or(usize::MAX, |n| n.saturating_add(1))),
            b'T' | b'X' | b'B' | 0x8b => (false, counted(pos, 4).map_or(usize::MAX, |n| n.saturating_add(4))),
            0x8d | 0x8e | 0x96 => (false, counted(pos, 8).map_or(usize::MAX, |n| n.saturating_add(8))),
            _ => return Err(DecodeError::Pickle(format!("invalid opcode 0x{op:02x} at offset {}", pos - 1))),
        };
        cost = cost.saturating_add(if cheap { REF_OP_BYTES } else { NODE_OP_BYTES });
        if cost > MAX_MACHINE_BYTES {
            return Ok(cost);
        }
        pos = pos.saturating_add(skip);
    }
    Ok(cost)
}

/// The length of the next `lines` lines at `pos` (past the end when one is
/// not terminated).
fn line_len(input: &[u8], pos: usize, lines: usize) -> usize {
    let mut at = pos;
    for _ in 0..lines {
        match input.get(at..).and_then(|rest| rest.iter().position(|&c| c == b'\n')) {
            Some(end) => at += end + 1,
            None => return usize::MAX,
        }
    }
    at - pos
}

/// The message of the budget's error (matched by [`decode_error`]).
const OVER_BUDGET: &str = "decoded reply over its memory budget";
/// The prefix of a shape error raised while decoding.
const SHAPE: &str = "shape: ";

/// The top value of a reply and the class of its second item (the
/// exception object of an error reply).
struct Decoded {
    value: PyValue,
    class: Option<Global>,
}

/// Shared by all sinks of one decoding (kept in deser's state).
#[derive(Debug, Default)]
struct DecodeState {
    /// Bytes charged so far.
    bytes: usize,
    /// The class of the reply's second item.
    class: Option<Global>,
}

/// Charges `bytes` to the budget, before they are allocated.
fn charge(state: &mut State, bytes: usize) -> Result<(), DeserError> {
    let decode = state.get_mut::<DecodeState>();
    decode.bytes = decode.bytes.saturating_add(bytes);
    if decode.bytes > MAX_DECODED_BYTES {
        return Err(DeserError::new(ErrorKind::LimitExceeded, OVER_BUDGET));
    }
    Ok(())
}

const VALUE_BYTES: usize = std::mem::size_of::<PyValue>();

/// Where a sink places its value.
enum Out<'a> {
    Root(&'a mut Option<Decoded>),
    Value(&'a mut Option<PyValue>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    /// The second item of the top tuple: its class is kept.
    ReplyValue,
    Plain,
}

enum Building {
    None,
    List(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>, Option<PyValue>),
}

/// Builds a [`PyValue`] from deser's events.
struct PySink<'a> {
    out: Out<'a>,
    role: Role,
    building: Building,
    /// The key or item decoded last.
    slot: Option<PyValue>,
    items: usize,
}

impl<'a> PySink<'a> {
    fn new(out: Out<'a>, role: Role) -> Self {
        Self { out, role, building: Building::None, slot: None, items: 0 }
    }

    fn begin(&mut self, state: &mut State) {
        if self.role == Role::ReplyValue {
            let class = deser_pickle::take_class(state);
            state.get_mut::<DecodeState>().class = class;
        }
    }

    /// Adds the value decoded last to the container.
    fn flush(&mut self) {
        if let Some(value) = self.slot.take() {
            match &mut self.building {
                Building::List(items) => items.push(value),
                Building::Dict(entries, key) => match key.take() {
                    Some(k) => entries.push((k, value)),
                    None => *key = Some(value),
                },
                Building::None => {}
            }
        }
    }

    fn place(&mut self, value: PyValue, state: &mut State) {
        match &mut self.out {
            Out::Value(out) => **out = Some(value),
            Out::Root(out) => {
                let class = state.get_mut::<DecodeState>().class.take();
                **out = Some(Decoded { value, class });
            }
        }
    }
}

fn shape_error(what: String) -> DeserError {
    DeserError::new(ErrorKind::InvalidType, format!("{SHAPE}{what}"))
}

impl<'de> Sink<'de> for PySink<'_> {
    fn atom(&mut self, atom: Atom, state: &mut State) -> Result<(), DeserError> {
        self.begin(state);
        let value = match atom {
            Atom::Null => PyValue::None,
            Atom::Bool(b) => PyValue::Bool(b),
            Atom::I64(n) => PyValue::Int(n),
            Atom::U64(n) => {
                PyValue::Int(i64::try_from(n).map_err(|_| shape_error("integer out of the 64-bit range".into()))?)
            }
            Atom::F64(f) => PyValue::Float(f),
            Atom::F32(f) => PyValue::Float(f64::from(f)),
            Atom::Str(s) => {
                charge(state, VALUE_BYTES + s.len())?;
                PyValue::Str(s.into_owned())
            }
            Atom::Bytes(b) => {
                charge(state, VALUE_BYTES + b.len())?;
                PyValue::Bytes(b.into_owned())
            }
            other => return Err(shape_error(format!("unsupported value {other:?}"))),
        };
        if !matches!(value, PyValue::Str(_) | PyValue::Bytes(_)) {
            charge(state, VALUE_BYTES)?;
        }
        self.place(value, state);
        Ok(())
    }

    fn seq(&mut self, state: &mut State) -> Result<(), DeserError> {
        self.begin(state);
        charge(state, VALUE_BYTES)?;
        self.building = Building::List(Vec::new());
        Ok(())
    }

    fn map(&mut self, state: &mut State) -> Result<(), DeserError> {
        self.begin(state);
        charge(state, VALUE_BYTES)?;
        self.building = Building::Dict(Vec::new(), None);
        Ok(())
    }

    fn next_key(&mut self, state: &mut State) -> Result<SinkHandle<'_, 'de>, DeserError> {
        self.flush();
        Ok(SinkHandle::arena(PySink::new(Out::Value(&mut self.slot), Role::Plain), state))
    }

    fn next_value(&mut self, state: &mut State) -> Result<SinkHandle<'_, 'de>, DeserError> {
        self.flush();
        let role = if self.role == Role::Root && self.items == 1 { Role::ReplyValue } else { Role::Plain };
        self.items += 1;
        Ok(SinkHandle::arena(PySink::new(Out::Value(&mut self.slot), role), state))
    }

    fn finish(&mut self, state: &mut State) -> Result<(), DeserError> {
        self.flush();
        let value = match std::mem::replace(&mut self.building, Building::None) {
            Building::None => return Ok(()),
            Building::List(items) => PyValue::List(items),
            Building::Dict(entries, None) => PyValue::Dict(entries),
            Building::Dict(_, Some(_)) => return Err(shape_error("a dict key without a value".into())),
        };
        self.place(value, state);
        Ok(())
    }

    fn expecting(&self) -> Cow<'_, str> {
        Cow::Borrowed("a fail2ban reply value")
    }
}

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize_into<'out>(out: &'out mut Option<Self>, state: &mut State) -> SinkHandle<'out, 'de> {
        SinkHandle::arena(PySink::new(Out::Root(out), Role::Root), state)
    }

    fn expecting() -> Cow<'static, str> {
        Cow::Borrowed("a fail2ban reply")
    }
}

#[cfg(test)]
mod tests;
