//! The host's identity on disk: its id, the name it was listed by and its
//! credential, in `identity.json` under the state directory (mode 0600, the
//! directory 0700). Written whole to a temporary file, synced and renamed,
//! so a crash leaves the old file or the new one, never half of one.
//!
//! The id is made before enrolling and kept in `host-id`, so an enrollment
//! whose answer was lost is retried with the same id.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where the identity lives in the state directory.
const IDENTITY_FILE: &str = "identity.json";
/// The id made before enrolling.
const HOST_ID_FILE: &str = "host-id";
/// Larger files are not an identity this agent wrote.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What the control plane knows the host by.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: String,
    pub host_name: String,
    /// The secret the agent attaches with (`authorization: Bearer …`).
    pub credential: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Identity").field("host_id", &self.host_id).field("host_name", &self.host_name).finish()
    }
}

/// The state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an identity this agent wrote: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_owned(), source }
}

impl Identity {
    /// The identity saved in `dir`, if the agent enrolled.
    pub fn load(dir: &Path) -> Result<Option<Self>, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let Some(text) = read_small(&path)? else { return Ok(None) };
        let identity: Identity = serde_json::from_str(&text)
            .map_err(|e| IdentityError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if identity.host_id.is_empty() || identity.credential.is_empty() {
            return Err(IdentityError::Corrupt { path, reason: "no host id or no credential".into() });
        }
        Ok(Some(identity))
    }

    /// Saves the identity in `dir` (made 0700 if missing), mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| IdentityError::Corrupt { path: dir.join(IDENTITY_FILE), reason: e.to_string() })?;
        write_private(dir, IDENTITY_FILE, text.as_bytes())
    }
}

/// The host id made for enrolling: the saved one, or a new UUID saved now.
pub fn host_id(dir: &Path) -> Result<String, IdentityError> {
    let path = dir.join(HOST_ID_FILE);
    if let Some(text) = read_small(&path)? {
        let id = text.trim();
        if uuid::Uuid::parse_str(id).is_ok() {
            return Ok(id.to_owned());
        }
        return Err(IdentityError::Corrupt { path, reason: "not a UUID".into() });
    }
    let id = uuid::Uuid::new_v4().to_string();
    write_private(dir, HOST_ID_FILE, id.as_bytes())?;
    Ok(id)
}

/// A file's text, `None` when it does not exist.
fn read_small(path: &Path) -> Result<Option<String>, IdentityError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(IdentityError::Corrupt { path: path.to_owned(), reason: format!("{} bytes", meta.len()) });
    }
    fs::read_to_string(path).map(Some).map_err(io(path))
}

/// Writes `name` in `dir` with mode 0600: a temporary file, synced, renamed.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IdentityError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp).map_err(io(&temp))?;
    // An existing temporary file keeps its mode: make sure.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    fs::rename(&temp, &path).map_err(io(&path))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_private_and_never_prints_its_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(Identity::load(&state).unwrap(), None);
        let identity =
            Identity { host_id: host_id(&state).unwrap(), host_name: "web-1".into(), credential: "s3cr3t".into() };
        identity.save(&state).unwrap();
        assert_eq!(Identity::load(&state).unwrap(), Some(identity.clone()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(IDENTITY_FILE)), 0o600);
        assert_eq!(mode(&state.join(HOST_ID_FILE)), 0o600);
        assert_eq!(mode(&state), 0o700);
        assert!(!format!("{identity:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_host_id_is_kept_between_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let first = host_id(dir.path()).unwrap();
        assert_eq!(host_id(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_or_huge_file_is_an_error_not_a_new_host() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), "{\"host_id\": ").unwrap();
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Corrupt { .. })));
        fs::write(dir.path().join(IDENTITY_FILE), vec![b' '; 100_000]).unwrap();
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Corrupt { .. })));
        fs::write(dir.path().join(HOST_ID_FILE), "not-a-uuid").unwrap();
        assert!(matches!(host_id(dir.path()), Err(IdentityError::Corrupt { .. })));
    }
}
