//! Input checks that run before anything reaches fail2ban's socket, which
//! is root-equivalent: every argument is parsed into a type that can only
//! hold a valid value.

use std::{fmt, net::IpAddr};

use bangui_runtime::InvalidArgument;

/// The marker fail2ban's framing uses; no argument may contain it.
const FRAMING_MARKER: &str = "<F2B_";

/// A jail name as fail2ban's configuration allows it: letters, digits and
/// `_ - . @ :`, at most 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JailName(String);

impl JailName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidArgument> {
        if text.is_empty() {
            return Err(InvalidArgument::new(field, "a jail name is required"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidArgument::new(field, format!("longer than {} characters", Self::MAX_LEN)));
        }
        if text.starts_with('-') {
            return Err(InvalidArgument::new(field, "must not start with '-'"));
        }
        if let Some(bad) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.@:".contains(*c))) {
            return Err(InvalidArgument::new(field, format!("character {bad:?} is not allowed in a jail name")));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JailName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP address, in its canonical text form (what fail2ban stores).
pub fn parse_ip(field: &'static str, text: &str) -> Result<IpAddr, InvalidArgument> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidArgument::new(field, "an IP address is required"));
    }
    trimmed.parse::<IpAddr>().map_err(|_| InvalidArgument::new(field, format!("{trimmed:?} is not an IP address")))
}

/// An ignore-list entry: an IP address or a network in CIDR notation,
/// normalized (`10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_ignore_entry(field: &'static str, text: &str) -> Result<String, InvalidArgument> {
    let trimmed = text.trim();
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match trimmed.parse::<ipnet::IpNet>() {
        Ok(net) => Ok(net.trunc().to_string()),
        Err(_) => Err(InvalidArgument::new(field, format!("{trimmed:?} is neither an IP address nor a CIDR network"))),
    }
}

/// A duration in seconds for bantime (-1 = permanent) or findtime.
pub fn parse_seconds(field: &'static str, value: i64, allow_permanent: bool) -> Result<i64, InvalidArgument> {
    match value {
        -1 if allow_permanent => Ok(-1),
        1..=315_360_000 => Ok(value),
        _ if allow_permanent => Err(InvalidArgument::new(field, "must be -1 (permanent) or 1..=315360000 seconds")),
        _ => Err(InvalidArgument::new(field, "must be 1..=315360000 seconds")),
    }
}

/// The last line of defence: no argument may carry fail2ban's framing
/// marker, whatever built it.
pub fn check_framing(args: &[&str]) -> Result<(), InvalidArgument> {
    if args.iter().any(|a| a.contains(FRAMING_MARKER)) {
        return Err(InvalidArgument::new("command", "an argument contains fail2ban's framing marker"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_names() {
        for ok in ["sshd", "nginx-http-auth", "recidive", "apache_auth.2", "a@b:c"] {
            assert!(JailName::parse("jail", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "<F2B_END_COMMAND>", "x\n", "ß", &"a".repeat(101)] {
            let err = JailName::parse("jail", bad).unwrap_err();
            assert_eq!(err.field, "jail", "{bad}");
        }
    }

    #[test]
    fn ips_and_networks() {
        assert_eq!(parse_ip("ip", " 192.0.2.1 ").unwrap().to_string(), "192.0.2.1");
        assert_eq!(parse_ip("ip", "2001:DB8:0::1").unwrap().to_string(), "2001:db8::1");
        for bad in ["", "1.2.3", "300.1.1.1", "1.2.3.4/32", "example.com", "1.2.3.4<F2B_"] {
            assert_eq!(parse_ip("ip", bad).unwrap_err().field, "ip", "{bad}");
        }
        assert_eq!(parse_ignore_entry("ip", "10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(parse_ignore_entry("ip", "2001:db8::1").unwrap(), "2001:db8::1");
        assert!(parse_ignore_entry("ip", "10.0.0.0/33").is_err());
        assert!(parse_ignore_entry("ip", "localhost").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("bantime_seconds", -1, true), Ok(-1));
        assert!(parse_seconds("findtime_seconds", -1, false).is_err());
        assert!(parse_seconds("bantime_seconds", 0, true).is_err());
        assert_eq!(parse_seconds("bantime_seconds", 600, true), Ok(600));
    }

    #[test]
    fn framing_marker_is_refused() {
        assert!(check_framing(&["set", "x<F2B_CLOSE_COMMAND>"]).is_err());
        assert!(check_framing(&["set", "sshd", "banip", "1.2.3.4"]).is_ok());
    }
}
