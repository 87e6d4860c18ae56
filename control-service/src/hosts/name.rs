//! The checked values of the fleet's edge: host ids, host names, what an
//! agent announces (versions, jails, its instance). Each is bounded before
//! anything is written, and names the request field it came from.

use bangui_fail2ban::JailName;

use crate::error::InvalidArgument;

/// A host's stable id: a UUID the agent made, kept in its canonical
/// lowercase hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostId(String);

impl HostId {
    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidArgument> {
        // Bounded before parsing: a UUID is at most 45 characters in any form.
        if text.len() > 64 {
            return Err(InvalidArgument::new(field, "a host id is a UUID (at most 64 characters)"));
        }
        let id = uuid::Uuid::parse_str(text).map_err(|_| InvalidArgument::new(field, "a host id is a UUID"))?;
        Ok(Self(id.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host's display name: 1–63 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(String);

impl HostName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidArgument> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(InvalidArgument::new(field, "a host name is 1 to 63 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(InvalidArgument::new(field, "a host name has only letters, digits, '.', '-' and '_'"));
        }
        if text.eq_ignore_ascii_case(crate::fleet::LOCAL) {
            return Err(InvalidArgument::new(
                field,
                "`local` is the control-service's own fail2ban: choose another name",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names an enrollment tries, in order: this one, then `-2` to
    /// `-9`, then the first 8 characters of the id; each cut to fit.
    pub fn candidates(&self, id: &HostId) -> Vec<String> {
        let with = |suffix: &str| {
            let keep = Self::MAX_LEN - suffix.len();
            // The name is ASCII: any byte index is a character boundary.
            format!("{}{suffix}", &self.0[..self.0.len().min(keep)])
        };
        let mut names = vec![self.0.clone()];
        names.extend((2..=9).map(|n| with(&format!("-{n}"))));
        names.push(with(&format!("-{}", &id.as_str()[..8])));
        names
    }
}

/// The most jails an agent may announce.
pub const MAX_JAILS: usize = 1000;
/// The longest version string, or agent instance.
pub const MAX_VERSION_LEN: usize = 64;

/// One jail's counters as an agent pushed them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JailState {
    pub name: String,
    pub currently_failed: u64,
    pub total_failed: u64,
    pub currently_banned: u64,
    pub total_banned: u64,
}

/// What an agent says of its host at hello and at each heartbeat, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announcement {
    pub fail2ban_version: String,
    pub jails: Vec<JailName>,
    /// Each jail's counters (none from an agent that sends none).
    pub states: Vec<JailState>,
    /// How old `states` were when sent, in ms (`None`: no states).
    pub states_age_ms: Option<i64>,
    /// Events in the agent's outbox not yet acknowledged.
    pub outbox_backlog: i64,
}

impl Announcement {
    /// `prefix` is the message (`hello` or `heartbeat`), for field names.
    pub fn parse(
        fields: (&'static str, &'static str),
        fail2ban_version: &str,
        jails: &[String],
    ) -> Result<Self, InvalidArgument> {
        let (version_field, jails_field) = fields;
        bounded(version_field, fail2ban_version)?;
        if jails.len() > MAX_JAILS {
            return Err(InvalidArgument::new(jails_field, format!("at most {MAX_JAILS} jails")));
        }
        let jails = jails.iter().map(|jail| JailName::parse(jails_field, jail)).collect::<Result<_, _>>()?;
        Ok(Self { fail2ban_version: fail2ban_version.to_owned(), jails, ..Self::default() })
    }

    /// Adds the jails' counters (`field` names them), their age and the
    /// outbox backlog; bounded like the jail names.
    pub fn with_states(
        mut self,
        field: &'static str,
        states: Vec<JailState>,
        age_ms: u64,
        outbox_backlog: u64,
    ) -> Result<Self, InvalidArgument> {
        if states.len() > MAX_JAILS {
            return Err(InvalidArgument::new(field, format!("at most {MAX_JAILS} jails")));
        }
        for state in &states {
            JailName::parse(field, &state.name)?;
        }
        if !states.is_empty() {
            // A day at most: an older reading is as good as none.
            self.states_age_ms = Some(i64::try_from(age_ms.min(86_400_000)).unwrap_or(0));
        }
        self.states = states;
        self.outbox_backlog = i64::try_from(outbox_backlog).unwrap_or(i64::MAX);
        Ok(self)
    }

    /// The counters as stored: a JSON array.
    pub fn states_json(&self) -> String {
        serde_json::to_string(&self.states).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The jails as stored: a JSON array of names.
    pub fn jails_json(&self) -> String {
        let names: Vec<&str> = self.jails.iter().map(JailName::as_str).collect();
        serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// `text` if it is at most [`MAX_VERSION_LEN`] characters.
pub fn bounded(field: &'static str, text: &str) -> Result<(), InvalidArgument> {
    if text.chars().count() > MAX_VERSION_LEN {
        return Err(InvalidArgument::new(field, format!("at most {MAX_VERSION_LEN} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(HostName::parse("name", "web-1.example_a").is_ok());
        for bad in ["", "a b", "héllo", "x/y", &"a".repeat(64)] {
            let error = HostName::parse("name", bad).unwrap_err();
            assert_eq!(error.field, "name", "{bad}");
        }
        assert!(HostName::parse("name", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn candidates_fit_and_end_with_the_id() {
        let id = HostId::parse("id", "0F8FAD5B-D9CB-469F-A165-70867728950E").unwrap();
        assert_eq!(id.as_str(), "0f8fad5b-d9cb-469f-a165-70867728950e");
        let long = HostName::parse("name", &"a".repeat(63)).unwrap();
        let names = long.candidates(&id);
        assert_eq!(names.len(), 10);
        assert!(names.iter().all(|n| HostName::parse("name", n).is_ok()), "{names:?}");
        assert!(names[1].ends_with("-2") && names[9].ends_with("-0f8fad5b"));
        assert!(HostId::parse("id", "not-a-uuid").is_err());
    }

    #[test]
    fn pushed_counters_are_bounded() {
        let state = |name: &str| JailState { name: name.into(), currently_banned: 2, ..JailState::default() };
        let said = Announcement::default().with_states("s", vec![state("sshd")], 90_000_000, 5).unwrap();
        assert_eq!(said.states_age_ms, Some(86_400_000), "an age is at most a day");
        assert_eq!(said.outbox_backlog, 5);
        assert!(said.states_json().contains(r#""currently_banned":2"#));
        assert_eq!(Announcement::default().with_states("s", vec![], 5, 0).unwrap().states_age_ms, None);
        let bad = Announcement::default().with_states("s", vec![state("bad name")], 0, 0).unwrap_err();
        assert_eq!(bad.field, "s");
        let many = (0..=MAX_JAILS).map(|i| state(&format!("j{i}"))).collect();
        assert!(Announcement::default().with_states("s", many, 0, 0).is_err());
    }

    #[test]
    fn announcements_are_bounded() {
        let ok = Announcement::parse(("v", "j"), "1.1.0", &["sshd".into(), "nginx-http".into()]).unwrap();
        assert_eq!(ok.jails_json(), r#"["sshd","nginx-http"]"#);
        let many: Vec<String> = (0..=MAX_JAILS).map(|i| format!("j{i}")).collect();
        assert_eq!(Announcement::parse(("v", "j"), "1", &many).unwrap_err().field, "j");
        assert_eq!(Announcement::parse(("v", "j"), "1", &["bad jail".into()]).unwrap_err().field, "j");
        assert_eq!(Announcement::parse(("v", "j"), &"9".repeat(65), &[]).unwrap_err().field, "v");
    }
}
