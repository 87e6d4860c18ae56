//! The socket transport: one short connection per command, as
//! fail2ban-client does, so a restarted fail2ban is picked up by the next
//! command without any reconnect logic. A semaphore keeps at most a few
//! commands in flight (fail2ban serves its clients from one thread), and
//! every step has a deadline.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{Semaphore, SemaphorePermit},
};

use super::{
    Fail2banError,
    banlist::{BanListDecoder, BanListError, BanListReply, Fed, JailBans},
    codec::{self, CLOSE, END, MAX_REPLY_BYTES, PyValue, Reply},
    validate::check_framing,
};

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

/// Told of every command a [`SocketClient`] sent: its first word, how it
/// ended and how long it took (the services' metrics).
pub trait CommandObserver: std::fmt::Debug + Send + Sync {
    fn command(&self, command: &str, error: Option<&Fail2banError>, took: Duration);
}

/// A command's first word as a metrics label: fail2ban's own words, every
/// other one `other` (labels stay a small, fixed set whatever is sent).
pub fn command_label(command: &str) -> &'static str {
    match command {
        "ping" => "ping",
        "version" => "version",
        "status" => "status",
        "get" => "get",
        "set" => "set",
        "stop" => "stop",
        "unban" => "unban",
        "banned" => "banned",
        _ => "other",
    }
}

/// Observes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl CommandObserver for Unobserved {
    fn command(&self, _command: &str, _error: Option<&Fail2banError>, _took: Duration) {}
}

/// Sends commands to fail2ban's socket.
#[derive(Debug, Clone)]
pub struct SocketClient {
    settings: Arc<SocketSettings>,
    slots: Arc<Semaphore>,
    observer: Arc<dyn CommandObserver>,
}

impl SocketClient {
    pub fn new(settings: SocketSettings, observer: Arc<dyn CommandObserver>) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Self { settings: Arc::new(settings), slots, observer }
    }

    pub fn socket_path(&self) -> &std::path::Path {
        &self.settings.path
    }

    /// The deadline of one ordinary command.
    pub fn reply_timeout(&self) -> Duration {
        self.settings.reply_timeout
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
        let started = tokio::time::Instant::now();
        let outcome = self.timed(args, deadline, self.exchange(args)).await;
        self.record(args, started, outcome.and_then(|reply| self.value_of(reply)))
    }

    /// Sends `get <jail> banip` (or any command whose reply is a list of
    /// addresses) and decodes the reply while it is read
    /// ([`BanListDecoder`]): the reply is never held whole, and its bounds
    /// are the ban list's own. `deadline` covers the whole command; once
    /// the reply has begun, a pause of more than the usual reply timeout
    /// between two reads also ends it. The bans come back unsorted.
    pub async fn call_ban_list(&self, args: &[&str], deadline: Duration) -> Result<JailBans, Fail2banError> {
        check_framing(args)?;
        let started = tokio::time::Instant::now();
        let outcome = self.timed(args, deadline, self.exchange_ban_list(args)).await;
        let outcome = outcome.and_then(|reply| match reply {
            BanListReply::Bans(bans) => Ok(bans),
            BanListReply::Other(reply) => match self.value_of(reply) {
                // The decoder hands every `Ok` over as bans.
                Ok(_) => Err(Fail2banError::Protocol("a ban list reply without its list".into())),
                Err(error) => Err(error),
            },
        });
        self.record(args, started, outcome)
    }

    /// Runs `exchange` within `deadline`.
    async fn timed<T>(
        &self,
        args: &[&str],
        deadline: Duration,
        exchange: impl std::future::Future<Output = Result<T, Fail2banError>>,
    ) -> Result<T, Fail2banError> {
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Fail2banError::Timeout { after: deadline, command: args.join(" ") }),
        }
    }

    fn record<T>(
        &self,
        args: &[&str],
        started: tokio::time::Instant,
        outcome: Result<T, Fail2banError>,
    ) -> Result<T, Fail2banError> {
        let command = args.first().copied().unwrap_or_default();
        self.observer.command(command, outcome.as_ref().err(), started.elapsed());
        outcome
    }

    /// A reply's value, or the error it carries.
    fn value_of(&self, reply: Reply) -> Result<PyValue, Fail2banError> {
        match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Exception { module, name, args } => Err(Fail2banError::from_exception(&module, &name, &args)),
            Reply::ServerError(text) => Err(Fail2banError::Server(text)),
            Reply::Shutdown => Err(self.unavailable("fail2ban is shutting down")),
        }
    }

    async fn exchange(&self, args: &[&str]) -> Result<Reply, Fail2banError> {
        let (_slot, mut stream) = self.send(args).await?;
        let body = read_reply(&mut stream).await.map_err(|e| self.unavailable(&e))?;
        close(stream).await;
        codec::decode_reply(&body).map_err(|e| Fail2banError::Protocol(e.to_string()))
    }

    async fn exchange_ban_list(&self, args: &[&str]) -> Result<BanListReply, Fail2banError> {
        let (_slot, mut stream) = self.send(args).await?;
        // The decoding (about 0.7 ms of CPU per 32 KiB read) runs on a
        // blocking thread, fed through a short channel: the runtime only
        // moves bytes, and a slow decoder slows the reads, not the memory.
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(DECODE_QUEUE);
        let decoding = tokio::task::spawn_blocking(move || {
            let mut decoder = BanListDecoder::new();
            while let Some(chunk) = received.blocking_recv() {
                if decoder.feed(&chunk)? == Fed::Done {
                    return decoder.finish();
                }
            }
            Err(BanListError::Pickle("the reply ended early".into()))
        });
        tokio::pin!(decoding);
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut begun = false;
        let outcome = loop {
            tokio::select! {
                biased;
                // The decoder is done (the end marker was read) or failed.
                decoded = &mut decoding => break decoded,
                read = self.read_more(&mut stream, &mut buffer, begun, args) => {
                    let n = read?;
                    begun = true;
                    // A closed channel means the decoder ended: its
                    // outcome is taken on the next turn.
                    let _ = chunks.send(buffer[..n].to_vec()).await;
                }
            }
        };
        let reply = outcome
            .map_err(|error| Fail2banError::Protocol(format!("decoding the ban list failed: {error}")))?
            .map_err(|error| ban_list_error(args, error))?;
        close(stream).await;
        Ok(reply)
    }

    /// The next bytes of a reply. fail2ban builds the whole reply before
    /// it sends a byte (`deadline` of the command covers that); once it
    /// has begun, it flows, or fail2ban is stuck: a pause longer than the
    /// reply timeout ends it.
    async fn read_more(
        &self,
        stream: &mut UnixStream,
        buffer: &mut [u8],
        begun: bool,
        args: &[&str],
    ) -> Result<usize, Fail2banError> {
        let read = stream.read(buffer);
        let n = if begun {
            match tokio::time::timeout(self.settings.reply_timeout, read).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(Fail2banError::Timeout {
                        after: self.settings.reply_timeout,
                        command: format!("{} (the reply stopped)", args.join(" ")),
                    });
                }
            }
        } else {
            read.await
        }
        .map_err(|e| self.unavailable(&format!("receive failed: {e}")))?;
        if n == 0 {
            return Err(self.unavailable("connection closed before the reply ended"));
        }
        Ok(n)
    }

    /// Takes a slot, connects and sends `args`.
    async fn send(&self, args: &[&str]) -> Result<(SemaphorePermit<'_>, UnixStream), Fail2banError> {
        let request = codec::encode_request(args).map_err(Fail2banError::Protocol)?;
        let slot = self.slots.acquire().await.map_err(|_| self.unavailable("client closed"))?;
        let mut stream =
            match tokio::time::timeout(self.settings.connect_timeout, UnixStream::connect(&self.settings.path)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(self.unavailable(&error.to_string())),
                Err(_) => return Err(self.unavailable("connect timed out")),
            };
        stream.write_all(&request).await.map_err(|e| self.unavailable(&format!("send failed: {e}")))?;
        Ok((slot, stream))
    }

    fn unavailable(&self, reason: &str) -> Fail2banError {
        Fail2banError::Unavailable { socket: self.settings.path.display().to_string(), reason: reason.to_owned() }
    }
}

/// Says goodbye as fail2ban-client does; the reply is already in hand.
async fn close(mut stream: UnixStream) {
    let mut close = CLOSE.to_vec();
    close.extend_from_slice(END);
    let _ = stream.write_all(&close).await;
    let _ = stream.shutdown().await;
}

/// A ban list's decoding error: over a bound, or a reply this service
/// cannot read.
fn ban_list_error(args: &[&str], error: BanListError) -> Fail2banError {
    if error.is_over_limit() {
        Fail2banError::ReplyTooLarge { command: args.join(" "), limit: error.to_string() }
    } else {
        Fail2banError::Protocol(error.to_string())
    }
}

/// Bytes read at once: about 700 bans.
const READ_CHUNK: usize = 32 * 1024;
/// Reads waiting for the ban list's decoder: what a reply may hold in
/// memory beside the decoded addresses (4 × 32 KiB).
const DECODE_QUEUE: usize = 4;

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
