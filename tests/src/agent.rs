//! A real `fail2ban-agent` process: started against a control plane's
//! agent port with a state directory of its own, its log lines kept, and
//! the signals a fleet test sends (SIGTERM, SIGKILL, SIGSTOP/SIGCONT).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::binary;

/// A running agent.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    state_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl AgentProcess {
    /// Starts `fail2ban-agent` for the control plane at `endpoint`
    /// (`http://127.0.0.1:P`), keeping its identity in `state_dir`, talking
    /// to fail2ban at `socket`, with `args` after (e.g. `--enroll-token`).
    pub fn start(endpoint: &str, state_dir: &Path, socket: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(binary("fail2ban-agent"));
        command
            .args([
                "--control-endpoint",
                endpoint,
                "--log-format",
                "json",
                "--log",
                "info",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--fail2ban-socket")
            .arg(socket)
            .args(args)
            .env_remove("FAIL2BAN_AGENT_ENROLL_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn fail2ban-agent: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = logs.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            }));
        }
        Self { child, state_dir: state_dir.to_owned(), logs, readers }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far, in KiB: `VmHWM` from `/proc/PID/status`.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM for fail2ban-agent"))
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Every line it printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// How many lines so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.logs.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    /// Waits until `text` has been printed `times` times, up to `within`.
    pub async fn wait_for(&self, text: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(text) < times {
            assert!(
                Instant::now() < deadline,
                "fail2ban-agent did not print {text:?} {times}×; output:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until its `attached` count reaches `times`.
    pub async fn wait_attached(&self, times: usize) {
        self.wait_for("attached to the control plane", times, Duration::from_secs(20)).await;
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for it to exit on its own, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "fail2ban-agent still runs; output:\n{}", self.logs().join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        let status = self.child.wait().expect("wait");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// SIGKILL: no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
