//! The one child process the control-service runs: `fail2ban-client
//! reload --if-exists <jail>` for StartJail. It gets a cleared environment
//! with only [`INHERITED`]: the service's own environment holds secrets
//! (`CONTROL_GEO_AUTH_TOKEN`, `CONTROL_ADMIN_PASSWORD_HASH`, a database URL
//! with its password) that fail2ban-client has no use for.

use std::{ffi::OsStr, path::Path};

/// What a child inherits, when set: the search path (fail2ban-client is a
/// Python script found through it, its interpreter too) and the locale.
pub const INHERITED: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE"];

/// `binary -c config_dir -s socket reload --if-exists jail`, with a cleared
/// environment but for [`INHERITED`], no standard input, killed if dropped.
pub fn reload_command(binary: &Path, config_dir: &Path, socket: &Path, jail: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .envs(INHERITED.iter().filter_map(|name| Some((OsStr::new(name), std::env::var_os(name)?))))
        .arg("-c")
        .arg(config_dir)
        .arg("-s")
        .arg(socket)
        .args(["reload", "--if-exists", jail])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// Names the shell itself sets in the environment it passes on.
    const SHELL_SET: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

    #[test]
    fn the_command_passes_only_path_and_locale() {
        let command = reload_command(Path::new("fail2ban-client"), Path::new("/etc/fail2ban"), Path::new("/s"), "sshd");
        let std = command.as_std();
        for (name, value) in std.get_envs() {
            let name = name.to_string_lossy();
            assert!(INHERITED.contains(&name.as_ref()), "{name} is passed");
            assert_eq!(value, std::env::var_os(name.as_ref()).as_deref(), "{name} as this process has it");
        }
        let args: Vec<_> = std.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-c", "/etc/fail2ban", "-s", "/s", "reload", "--if-exists", "sshd"]);
    }

    /// A real child: a script in place of fail2ban-client that writes the
    /// environment it got. This test process's environment (cargo's and
    /// nextest's variables, HOME, …) must not reach it.
    #[tokio::test]
    async fn the_child_sees_only_path_and_locale() {
        let parent: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert!(parent.iter().any(|k| !INHERITED.contains(&k.as_str())), "the test needs something to leave out");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fail2ban-client");
        let dump = dir.path().join("env.txt");
        std::fs::write(&script, format!("#!/bin/sh\nexec env > '{}'\n", dump.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let output = loop {
            match reload_command(&script, dir.path(), &dir.path().join("sock"), "sshd").output().await {
                // Another test's fork may still hold the script open for writing.
                Err(error) if error.raw_os_error() == Some(26) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => break other.unwrap(),
            }
        };
        assert!(output.status.success(), "{output:?}");
        let seen = std::fs::read_to_string(&dump).unwrap();
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        for name in &names {
            assert!(INHERITED.contains(name) || SHELL_SET.contains(name), "the child saw {name}:\n{seen}");
        }
        if let Some(path) = std::env::var_os("PATH") {
            assert!(seen.lines().any(|l| l == format!("PATH={}", path.to_string_lossy())), "{seen}");
        }
    }
}
