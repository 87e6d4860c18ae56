//! The local step of a lookup and the answer types every step shares.
//!
//! An input is bounded, parsed and normalized first (IPv4-mapped IPv6
//! becomes IPv4); an address in a reserved range is answered here and never
//! reaches a database or anything remote; everything else goes to the MMDB
//! set. What the databases miss goes on to the cache and the fallback
//! (`crate::lookup`).

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;

use crate::mmdb::{DatabaseSet, Location};

/// Longest input accepted: the longest text of an address
/// ("0000:0000:0000:0000:0000:ffff:255.255.255.255" is 45 bytes) with room
/// for surrounding white space. Anything longer is not an address and is
/// refused before it is parsed.
pub const MAX_INPUT_BYTES: usize = 64;
/// Longest input echoed back (in an error, or as a result's input).
const MAX_ECHO: usize = 64;

pub use bangui_runtime::reserved::{ReservedRange, reserved_range};

/// Parses and normalizes one input. `Err` carries the reason it is not an
/// IP address.
pub fn parse_ip(input: &str) -> Result<IpAddr, String> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "{} bytes is longer than any IP address (at most {MAX_INPUT_BYTES}): {:?}…",
            input.len(),
            prefix(input, MAX_ECHO)
        ));
    }
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("empty input: expected an IPv4 or IPv6 address".into());
    }
    trimmed.parse::<IpAddr>().map(|ip| ip.to_canonical()).map_err(|_| {
        let shown: String = trimmed.chars().take(MAX_ECHO).collect();
        let cut = if shown.len() < trimmed.len() { "…" } else { "" };
        format!("not an IP address: {shown:?}{cut}")
    })
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `input` as a result may echo it: whole when it is at most
/// [`MAX_INPUT_BYTES`] long, else its first bytes and "…".
pub fn echo(input: String) -> String {
    if input.len() <= MAX_INPUT_BYTES {
        return input;
    }
    let mut cut = prefix(&input, MAX_ECHO).to_owned();
    cut.push('…');
    cut
}

/// An address the online fallback placed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placed {
    pub country_code: String,
    pub country_name: Option<String>,
    pub continent_code: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

/// The answer for one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// A local database placed it.
    Found {
        ip: IpAddr,
        location: Location<'a>,
    },
    /// The online fallback placed it: just now (`fresh`) or earlier (from the cache).
    Placed {
        ip: IpAddr,
        placed: Arc<Placed>,
        resolved_at: i64,
        fresh: bool,
    },
    /// Nobody placed it: the databases missed it and the fallback was not
    /// asked, or was asked and could not place it.
    NotFound {
        ip: IpAddr,
    },
    Reserved {
        ip: IpAddr,
        range: ReservedRange,
    },
    Invalid {
        reason: String,
    },
    UpstreamError {
        ip: IpAddr,
        error: String,
    },
}

/// Outcome labels, for metrics and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Found = 0,
    NotFound = 1,
    Reserved = 2,
    Invalid = 3,
    UpstreamError = 4,
}

impl Outcome {
    /// Every outcome, in discriminant order.
    pub const ALL: [Outcome; 5] =
        [Outcome::Found, Outcome::NotFound, Outcome::Reserved, Outcome::Invalid, Outcome::UpstreamError];
}

impl Resolution<'_> {
    pub fn outcome(&self) -> Outcome {
        match self {
            Resolution::Found { .. } | Resolution::Placed { .. } => Outcome::Found,
            Resolution::NotFound { .. } => Outcome::NotFound,
            Resolution::Reserved { .. } => Outcome::Reserved,
            Resolution::Invalid { .. } => Outcome::Invalid,
            Resolution::UpstreamError { .. } => Outcome::UpstreamError,
        }
    }
}

/// Resolves addresses against the current database set. Cheap to clone;
/// the set is swapped atomically on reload and read without a lock.
#[derive(Debug, Clone)]
pub struct Resolver {
    databases: Arc<ArcSwap<DatabaseSet>>,
}

impl Resolver {
    pub fn new(databases: DatabaseSet) -> Self {
        Self { databases: Arc::new(ArcSwap::from_pointee(databases)) }
    }

    /// The database set in use now. Hold it for the length of one request
    /// so every item of a batch sees the same databases.
    pub fn databases(&self) -> Arc<DatabaseSet> {
        self.databases.load_full()
    }

    /// Puts `set` in use for every lookup that starts from now on; lookups
    /// under way finish on the set they started with.
    pub fn swap(&self, set: DatabaseSet) {
        self.databases.store(Arc::new(set));
    }

    /// Resolves every input against one snapshot of the databases, handing
    /// each answer to `each` in input order.
    pub fn resolve_each<I, T>(&self, inputs: I, mut each: impl FnMut(I::Item, Resolution<'_>) -> T) -> Vec<T>
    where
        I: IntoIterator,
        I::IntoIter: ExactSizeIterator,
        I::Item: AsRef<str>,
    {
        let set = self.databases();
        let inputs = inputs.into_iter();
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let resolution = resolve_in(&set, input.as_ref());
            out.push(each(input, resolution));
        }
        out
    }

    /// Like [`Resolver::resolve_each`] for a pair of results, spread over
    /// rayon's thread pool (one thread per core); both halves are written in
    /// place, in input order. Blocks until done: call it from a rayon task,
    /// not the async runtime.
    pub fn resolve_par<A, B, F>(&self, inputs: Vec<String>, each: F) -> (Vec<A>, Vec<B>)
    where
        A: Send,
        B: Send,
        F: Fn(String, Resolution<'_>) -> (A, B) + Sync,
    {
        use rayon::prelude::*;
        let set = self.databases();
        inputs
            .into_par_iter()
            .with_min_len(PAR_MIN_LEN)
            .map(|input| {
                let resolution = resolve_in(&set, &input);
                each(input, resolution)
            })
            .unzip()
    }
}

/// Smallest share of a batch one rayon task takes: below it, handing work
/// to another thread costs more than it saves.
const PAR_MIN_LEN: usize = 512;

/// Resolves one input against `set`, without counting.
pub fn resolve_in<'a>(set: &'a DatabaseSet, input: &str) -> Resolution<'a> {
    let ip = match parse_ip(input) {
        Ok(ip) => ip,
        Err(reason) => return Resolution::Invalid { reason },
    };
    if let Some(range) = reserved_range(ip) {
        return Resolution::Reserved { ip, range };
    }
    match set.lookup(ip) {
        Ok(Some(location)) => Resolution::Found { ip, location },
        Ok(None) => Resolution::NotFound { ip },
        Err(error) => {
            tracing::warn!(%ip, error = %error, "database lookup failed");
            Resolution::UpstreamError { ip, error: error.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReservedRange as R;

    fn range(ip: &str) -> Option<ReservedRange> {
        reserved_range(parse_ip(ip).unwrap())
    }

    #[test]
    fn reserved_ranges_are_recognized() {
        for (ip, expected) in [
            ("10.1.2.3", R::Private),
            ("172.31.255.255", R::Private),
            ("192.168.0.1", R::Private),
            ("fd12:3456::1", R::Private),
            ("127.0.0.1", R::Loopback),
            ("::1", R::Loopback),
            ("169.254.1.1", R::LinkLocal),
            ("fe80::1", R::LinkLocal),
            ("100.64.0.1", R::Cgnat),
            ("100.127.255.255", R::Cgnat),
            ("192.0.2.1", R::Documentation),
            ("198.51.100.7", R::Documentation),
            ("203.0.113.9", R::Documentation),
            ("2001:db8::1", R::Documentation),
            ("224.0.0.1", R::Multicast),
            ("239.255.255.250", R::Multicast),
            ("ff02::1", R::Multicast),
            ("0.0.0.0", R::Unspecified),
            ("::", R::Unspecified),
            ("0.1.2.3", R::Other),
            ("255.255.255.255", R::Other),
            ("198.18.0.1", R::Other),
            ("::ffff:10.0.0.1", R::Private),
            ("fec0::1", R::Private),
            ("3fff::1", R::Documentation),
            ("192.88.99.1", R::Other),
            // Embedded IPv4: the kind of the IPv4 address inside.
            ("64:ff9b::7f00:1", R::Loopback),
            ("64:ff9b::a9fe:a9fe", R::LinkLocal),
            ("::127.0.0.1", R::Loopback),
            ("::ffff:0:7f00:1", R::Loopback),
            ("2002:7f00:1::", R::Loopback),
            ("2001:0:7f00:1::", R::Loopback),
            ("64:ff9b:1::808:808", R::Other),
        ] {
            assert_eq!(range(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_not_reserved() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2001:4860::1",
            "2a00:1450::1",
            "fbff::1",
            "::ffff:8.8.8.8",
            // Embedded public IPv4: looked up like any address.
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn inputs_are_normalized() {
        assert_eq!(parse_ip(" 8.8.8.8 ").unwrap().to_string(), "8.8.8.8");
        assert_eq!(parse_ip("::FFFF:8.8.8.8").unwrap().to_string(), "8.8.8.8");
        assert_eq!(parse_ip("2001:4860:0:0:0:0:0:8888").unwrap().to_string(), "2001:4860::8888");
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert!(parse_ip("").unwrap_err().contains("empty"));
        assert!(parse_ip("   ").unwrap_err().contains("empty"));
        for bad in ["1.2.3", "1.2.3.256", "example.com", "8.8.8.8/24", "fe80::1%eth0", "[::1]", "01.2.3.4"] {
            assert!(parse_ip(bad).unwrap_err().contains("not an IP address"), "{bad}");
        }
        let long = "x".repeat(10_000);
        assert!(parse_ip(&long).unwrap_err().len() < 200);
        // Longer than any address: refused before parsing, named as such.
        let padded = format!("{}8.8.8.8", " ".repeat(60));
        assert!(parse_ip(&padded).unwrap_err().contains("longer than any IP address"));
        assert!(parse_ip(&format!("{}8.8.8.8", " ".repeat(50))).is_ok());
    }

    #[test]
    fn echoes_are_bounded_and_cut_on_a_character() {
        assert_eq!(echo("8.8.8.8".into()), "8.8.8.8");
        let long = "é".repeat(1_000);
        let cut = echo(long);
        assert!(cut.len() <= MAX_ECHO + '…'.len_utf8() && cut.ends_with('…'), "{cut}");
    }
}
