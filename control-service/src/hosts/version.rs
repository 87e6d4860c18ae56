//! Which agent versions this control plane speaks: the same major version
//! and a minor version at most one away from its own, so a rolling update
//! of either side (one minor at a time) never cuts the fleet off.

/// This control-service's version.
pub const CONTROL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `(major, minor)` of a semver string (`1.4.2`, `1.4.0-rc.1`); `None`
/// when it is not one.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether an agent of `agent` may attach to a control plane of `control`.
pub fn compatible(agent: &str, control: &str) -> bool {
    match (major_minor(agent), major_minor(control)) {
        (Some((a_major, a_minor)), Some((c_major, c_minor))) => a_major == c_major && a_minor.abs_diff(c_minor) <= 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_either_way() {
        assert!(compatible("1.4.0", "1.4.9"));
        assert!(compatible("1.3.2", "1.4.0"));
        assert!(compatible("1.5.0-rc.1", "1.4.0"));
        assert!(!compatible("1.6.0", "1.4.0"));
        assert!(!compatible("2.4.0", "1.4.0"));
        assert!(!compatible("", "1.4.0"));
        assert!(!compatible("latest", "1.4.0"));
        assert!(compatible(CONTROL_VERSION, CONTROL_VERSION));
    }
}
