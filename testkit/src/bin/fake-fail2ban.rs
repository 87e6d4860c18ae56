//! A fail2ban that answers at once, for benchmarks
//! ([`bangui_testkit::fake_fail2ban`]):
//!
//! ```text
//! fake-fail2ban --socket /tmp/f2b.sock --jail blocklist-import=-1 --jail sshd [--dbfile PATH] [--log]
//! ```
//!
//! It prints `ready` once the socket listens and serves until it is sent
//! `stop` (or killed).

use std::{io::Write, os::unix::net::UnixListener, process::ExitCode};

use bangui_testkit::fake_fail2ban::{Options, Server, serve};

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("fake-fail2ban: {error}");
            eprintln!("usage: fake-fail2ban --socket PATH [--jail NAME[=BANTIME]]... [--dbfile PATH] [--log]");
            return ExitCode::from(2);
        }
    };
    // A socket left by an earlier run is replaced, as fail2ban-server -x does.
    let _ = std::fs::remove_file(&options.socket);
    let listener = match UnixListener::bind(&options.socket) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("fake-fail2ban: cannot listen on {}: {error}", options.socket.display());
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    match serve(listener, Server::new(&options.jails, options.dbfile), options.log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fake-fail2ban: {error}");
            ExitCode::FAILURE
        }
    }
}
