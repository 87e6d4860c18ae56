//! The setup token file: where a fresh service leaves its one-time setup
//! token for the operator (the way Jenkins and Grafana hand out a first
//! password). The log names the file, never the token.
//!
//! There is at most one setup token at a time, for the whole cluster: the
//! control database keeps the token itself (table `setup_token`), so every
//! replica sharing it writes the same one to its own file, and a restart or
//! a rolling update keeps it. Stored in the clear rather than hashed (or
//! encrypted with a key the replicas would need to share through yet
//! another Secret): the token is only useful while no password exists, for
//! [`LIFETIME`] at most, and `Setup` deletes it in the transaction that
//! sets the password; whoever can write to the database can set the
//! password without it anyway.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use bangui_runtime::db::Backend;

/// How long a setup token is valid; then the next replica that looks
/// replaces it.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How often a replica brings its token file up to date while setup is
/// pending (a replaced token, a deleted file, a password set elsewhere).
pub const REFRESH: Duration = Duration::from_secs(10);

/// Runs a file operation on the blocking pool, off the async workers.
pub async fn off_runtime<T: Send + 'static>(
    operation: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(operation).await.map_err(std::io::Error::other)?
}

/// The file's name beside a SQLite database.
pub const FILE_NAME: &str = "setup-token";

/// Where the token goes: `explicit` (`--setup-token-file`) if given; else
/// beside a SQLite database file; else `setup-token` in the working
/// directory (PostgreSQL, or an in-memory SQLite database).
pub fn default_path(explicit: Option<&Path>, database_url: &str) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if matches!(Backend::of(database_url), Ok(Backend::Sqlite))
        && let Ok(options) = database_url.parse::<sqlx::sqlite::SqliteConnectOptions>()
    {
        let file = options.get_filename();
        if file != Path::new(":memory:")
            && let Some(dir) = file.parent()
        {
            return dir.join(FILE_NAME);
        }
    }
    PathBuf::from(FILE_NAME)
}

/// The token in `path`, if it holds one.
pub fn read(path: &Path) -> Option<String> {
    use std::io::Read;
    // A token is 43 characters; whatever else sits in the file costs at
    // most this much to look at (a longer file is not a token of ours).
    const MAX: u64 = 256;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX + 1).read_to_string(&mut text).ok()?;
    let token = text.trim();
    (text.len() as u64 <= MAX && !token.is_empty()).then(|| token.to_owned())
}

/// Writes `token` to `path`, readable by the owner only (0600), replacing
/// the file in one rename so a reader never sees half of it.
pub fn write(path: &Path, token: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(|| FILE_NAME.into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        // The mode above is filtered by the umask; make it exact.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{token}")?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_file_sits_beside_a_sqlite_database_and_is_the_owners_only() {
        assert_eq!(default_path(None, "sqlite:///var/lib/x/control.db"), Path::new("/var/lib/x/setup-token"));
        assert_eq!(default_path(None, "sqlite://control.db"), Path::new("setup-token"));
        assert_eq!(default_path(None, "sqlite::memory:"), Path::new("setup-token"));
        assert_eq!(default_path(None, "postgres://u@h/db"), Path::new("setup-token"));
        assert_eq!(default_path(Some(Path::new("/run/t")), "postgres://u@h/db"), Path::new("/run/t"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read(&path), None);
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        assert_eq!(read(&path), None, "a long file is not a token");
        write(&path, "first").unwrap();
        write(&path, "second").unwrap();
        assert_eq!(read(&path).as_deref(), Some("second"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        assert!(write(&dir.path().join("missing/dir/token"), "x").is_err());
    }
}
