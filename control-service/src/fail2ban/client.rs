//! The socket transport: one short connection per command, as
//! fail2ban-client does, so a restarted fail2ban is picked up by the next
//! command without any reconnect logic. A semaphore keeps at most a few
//! commands in flight (fail2ban serves its clients from one thread), and
//! every step has a deadline.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::Semaphore,
};

use super::{
    Fail2banError,
    codec::{self, CLOSE, END, MAX_REPLY_BYTES, PyValue, Reply},
    validate::check_framing,
};
use crate::metrics::Metrics;

/// How the client reaches fail2ban.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    pub path: PathBuf,
    pub connect_timeout: Duration,
    /// Deadline for one command: waiting for a slot, sending, and the reply.
    pub reply_timeout: Duration,
    /// Commands in flight at once.
    pub max_in_flight: usize,
}

/// Sends commands to fail2ban's socket.
#[derive(Debug, Clone)]
pub struct SocketClient {
    settings: Arc<SocketSettings>,
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

impl SocketClient {
    pub fn new(settings: SocketSettings, metrics: Metrics) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Self { settings: Arc::new(settings), slots, metrics }
    }

    pub fn socket_path(&self) -> &std::path::Path {
        &self.settings.path
    }

    /// Sends one command and returns its value; an exception reply becomes
    /// the matching [`Fail2banError`].
    pub async fn call(&self, args: &[&str]) -> Result<PyValue, Fail2banError> {
        self.call_within(args, self.settings.reply_timeout).await
    }

    /// [`SocketClient::call`] with its own deadline, for commands that
    /// carry many addresses (fail2ban runs the jail's actions for each).
    pub async fn call_within(&self, args: &[&str], deadline: Duration) -> Result<PyValue, Fail2banError> {
        check_framing(args)?;
        let command = args.first().copied().unwrap_or_default();
        let started = tokio::time::Instant::now();
        let outcome = match tokio::time::timeout(deadline, self.exchange(args)).await {
            Ok(result) => result,
            Err(_) => Err(Fail2banError::Timeout { after: deadline, command: args.join(" ") }),
        };
        let outcome = outcome.and_then(|reply| match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Exception { module, name, args } => Err(Fail2banError::from_exception(&module, &name, &args)),
            Reply::ServerError(text) => Err(Fail2banError::Server(text)),
            Reply::Shutdown => Err(Fail2banError::Unavailable {
                socket: self.settings.path.display().to_string(),
                reason: "fail2ban is shutting down".into(),
            }),
        });
        self.metrics.fail2ban_command(command, outcome.as_ref().err(), started.elapsed());
        outcome
    }

    async fn exchange(&self, args: &[&str]) -> Result<Reply, Fail2banError> {
        let request = codec::encode_request(args).map_err(Fail2banError::Protocol)?;
        let _slot = self.slots.acquire().await.map_err(|_| self.unavailable("client closed"))?;
        let mut stream =
            match tokio::time::timeout(self.settings.connect_timeout, UnixStream::connect(&self.settings.path)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(self.unavailable(&error.to_string())),
                Err(_) => return Err(self.unavailable("connect timed out")),
            };
        stream.write_all(&request).await.map_err(|e| self.unavailable(&format!("send failed: {e}")))?;
        let body = read_reply(&mut stream).await.map_err(|e| self.unavailable(&e))?;
        // Say goodbye as fail2ban-client does; the reply is already in hand.
        let mut close = CLOSE.to_vec();
        close.extend_from_slice(END);
        let _ = stream.write_all(&close).await;
        let _ = stream.shutdown().await;
        codec::decode_reply(&body).map_err(|e| Fail2banError::Protocol(e.to_string()))
    }

    fn unavailable(&self, reason: &str) -> Fail2banError {
        Fail2banError::Unavailable { socket: self.settings.path.display().to_string(), reason: reason.to_owned() }
    }
}

/// Reads until the end marker; the body is returned without it.
async fn read_reply(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("receive failed: {e}"))?;
        if n == 0 {
            return Err("connection closed before the reply ended".into());
        }
        body.extend_from_slice(&chunk[..n]);
        if body.ends_with(END) {
            body.truncate(body.len() - END.len());
            return Ok(body);
        }
        if body.len() > MAX_REPLY_BYTES + END.len() {
            return Err(format!("reply over the {MAX_REPLY_BYTES}-byte limit"));
        }
    }
}
