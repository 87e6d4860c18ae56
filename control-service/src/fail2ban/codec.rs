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
//! its class plus its arguments. On top of it this module bounds the size
//! (before decoding) and the nesting depth (while converting) of a reply.

use deser_pickle::Object;
use deser_value::Value;

/// Ends every request and reply.
pub const END: &[u8] = b"<F2B_END_COMMAND>";
/// Asks fail2ban to close the connection.
pub const CLOSE: &[u8] = b"<F2B_CLOSE_COMMAND>";
/// Largest reply accepted. A status of a jail with 100 000 banned IPv6
/// addresses is about 5 MB.
pub const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Deepest nesting accepted; fail2ban's replies nest four levels at most.
pub const MAX_DEPTH: usize = 32;

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

/// Decodes one reply body (without the end marker).
pub fn decode_reply(body: &[u8]) -> Result<Reply, DecodeError> {
    if body.len() > MAX_REPLY_BYTES {
        return Err(DecodeError::TooLarge(body.len()));
    }
    // The usual shape first: (code, value) with the value's class kept.
    if let Ok((code, value)) = deser_pickle::from_slice::<(i64, Object<Value>)>(body) {
        return match code {
            0 => Ok(Reply::Ok(convert(&value.value, 0)?)),
            1 => {
                let args = convert(&value.value, 0)?;
                Ok(match value.class {
                    Some(class) => {
                        Reply::Exception { module: class.module().to_owned(), name: class.name().to_owned(), args }
                    }
                    // fail2ban always pickles an exception object; a plain value here
                    // is still an error, reported as what it says.
                    None => Reply::Exception { module: "builtins".into(), name: "Exception".into(), args },
                })
            }
            other => Err(DecodeError::Shape(format!("reply code {other} (expected 0 or 1)"))),
        };
    }
    let value: Value = deser_pickle::from_slice(body).map_err(|e| DecodeError::Pickle(e.to_string()))?;
    match convert(&value, 0)? {
        PyValue::Str(text) if text.starts_with("ERROR") => Ok(Reply::ServerError(text)),
        PyValue::List(items) if items == [PyValue::Str("SHUTDOWN".into())] => Ok(Reply::Shutdown),
        other => Err(DecodeError::Shape(format!("expected (code, value), got {}", describe(&other)))),
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

fn convert(value: &Value, depth: usize) -> Result<PyValue, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    if value.is_null() {
        return Ok(PyValue::None);
    }
    if let Some(b) = value.as_bool() {
        return Ok(PyValue::Bool(b));
    }
    if let Some(n) = value.as_i64() {
        return Ok(PyValue::Int(n));
    }
    if value.as_u64().is_some() || value.as_i128().is_some() {
        return Err(DecodeError::Shape("integer out of the 64-bit range".into()));
    }
    if let Some(f) = value.as_f64() {
        return Ok(PyValue::Float(f));
    }
    if let Some(s) = value.as_str() {
        return Ok(PyValue::Str(s.to_owned()));
    }
    if let Some(b) = value.as_bytes() {
        return Ok(PyValue::Bytes(b.to_vec()));
    }
    if let Some(seq) = value.as_seq() {
        return seq.iter().map(|item| convert(item, depth + 1)).collect::<Result<_, _>>().map(PyValue::List);
    }
    if let Some(map) = value.as_map() {
        return map
            .iter()
            .map(|(k, v)| Ok((convert(k, depth + 1)?, convert(v, depth + 1)?)))
            .collect::<Result<_, _>>()
            .map(PyValue::Dict);
    }
    Err(DecodeError::Shape(format!("unsupported value {value:?}")))
}

#[cfg(test)]
mod tests;
