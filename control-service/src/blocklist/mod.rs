//! Blocklist imports: public lists of bad addresses mirrored into a
//! fail2ban jail (DESIGN.md section 10).
//!
//! * [`parse`]: every common list format into unique entries, with the
//!   lines it could not read; the filters that keep reserved ranges, the
//!   jail's ignoreip and the operator's networks out.
//! * [`fetch`]: the download (conditional GET, size cap while streaming,
//!   retries, public targets only), read by [`parse`] as it streams: the
//!   one path from a URL to a list that imports and previews share.
//! * `import`: one import, mirroring a list into its jail (ban what is new,
//!   unban what left the list and only an import banned), and its run row.
//! * here: [`Blocklists`], the sources (checked, stored), previews, "import
//!   now" requests to the leader, and the runs; the types runs share.
//!
//! Imports are the leader's jobs (`blocklist_import:<id>`, see
//! [`crate::jobs`]), so a scheduled slot runs once however many replicas
//! there are; in a process they run one at a time.

pub mod fetch;
pub mod parse;

/// Lines of a list kept for the operator when they cannot be read.
pub const MAX_BAD_LINES: usize = 20;

/// A line of a list that is not an address, a network or a comment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadLine {
    /// 1-based.
    pub line: u64,
    /// The line as read (lossy UTF-8), at most 200 bytes.
    pub text: String,
}

/// What one import saw and did, entry by entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Addresses and networks read from the list (after the CIDR policy,
    /// before the filters), each once.
    pub valid: u64,
    /// Lines that are not an entry, a comment or blank.
    pub invalid: u64,
    /// Entries listed again (the same address or network, or an address
    /// inside an expanded network listed before).
    pub duplicate: u64,
    /// In a reserved range (private, loopback, documentation, …).
    pub reserved: u64,
    /// In the jail's ignoreip list.
    pub ignored: u64,
    /// In the operator's `--never-ban` networks.
    pub never_ban: u64,
    /// Networks left out by the CIDR policy: every network under `skip`,
    /// those broader than /24 (IPv6 /120) under `expand`, those broader
    /// than the source's `ban_min_prefix_v4`/`_v6` under `ban`.
    pub cidr_skipped: u64,
    /// Listed and already banned in the jail (by any means).
    pub already_banned: u64,
    /// Banned by this import.
    pub newly_banned: u64,
    /// Unbanned by this import (left the list, listed by no other source).
    pub unbanned: u64,
    /// Bans or unbans fail2ban did not carry out.
    pub failed: u64,
    /// Of the bans made, those imports had made before and fail2ban lost
    /// (a restart without its database, an unban outside BanGUI).
    pub rebanned: u64,
    /// Listed, and left out for an operator's exception.
    pub excepted: u64,
}

mod import;

use std::{sync::Arc, time::Duration};

use ipnet::IpNet;
use tokio::sync::{Mutex, Semaphore};

use self::{
    fetch::{FetchError, Fetched, Fetcher, Validators},
    parse::{
        BROADEST_BAN_PREFIX_V4, BROADEST_BAN_PREFIX_V6, DEFAULT_BAN_MIN_PREFIX_V4, DEFAULT_BAN_MIN_PREFIX_V6,
        Exclusions, ParseError, ParseLimits, entry_text,
    },
};
pub use crate::store::blocklist::Hold;
/// The stored shapes of sources and runs, as the rest of the service sees them.
pub use crate::store::blocklist::{ImportRun, Source, SourceSpec};
use crate::{
    clock::Clock,
    error::{InvalidArgument, StoreError},
    history::History,
    kinds::{CidrPolicy, ImportStatus, RunTrigger},
    settings::{RuntimeSettings, Schedules, check_cron},
    store::{
        RunLedger,
        blocklist::{BanException, BlocklistStore, ImportCommit, SeenBody, SourceWriteError},
    },
};
use bangui_fail2ban::{Fail2ban, Fail2banError, JailName};

/// The jail a source is mirrored into when it names none.
pub const DEFAULT_JAIL: &str = "blocklist-import";
/// Largest body accepted when a source names no limit.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The largest limit a source may set.
pub const MAX_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most entries accepted when a source names no limit.
pub const DEFAULT_MAX_ENTRIES: u64 = 500_000;
/// The largest entry limit a source may set.
pub const MAX_MAX_ENTRIES: u64 = 1_000_000;
/// Longest source name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest URL.
const MAX_URL_LEN: usize = 2048;
/// Runs kept per source.
pub const KEEP_RUNS: u32 = 100;
/// Previews downloading at once in this process; more are refused.
const PREVIEWS_AT_ONCE: usize = 2;
/// A hold not refreshed for this long was left by a process that died
/// mid-import: another replica takes it over (a holder refreshes it every
/// [`HOLD_REFRESH`]; a new process of the same replica releases it at once,
/// [`Blocklists::start`]).
pub const STALE_HOLD: i64 = 30;
/// How often a holder refreshes its hold.
const HOLD_REFRESH: Duration = Duration::from_secs(5);

/// What the operator configured for every source.
#[derive(Debug, Clone, Default)]
pub struct BlocklistSettings {
    /// Networks never banned whatever a list says (`--never-ban`).
    pub never_ban: Vec<IpNet>,
}

/// What can go wrong with sources and imports.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("a source named {0:?} exists")]
    NameTaken(String),
    #[error("no blocklist source {0}")]
    NotFound(i64),
    #[error(
        "source {id} is held by {by} since {since} (an import or a delete is running; a hold whose holder is \
         gone is taken over {STALE_HOLD} s after its last refresh): try again when it ended"
    )]
    Busy { id: i64, by: String, since: i64 },
    #[error(
        "the source imports into {0:?}: its jail is fixed once its first import started (delete it, which unbans what only it listed, and create it again for another jail)"
    )]
    JailFixed(String),
    #[error("not every ban could be lifted, the source is kept (try again): {0}")]
    Incomplete(String),
    #[error("no exception for {net} in jail {jail:?}")]
    NoException { jail: String, net: String },
    #[error("jail {0:?} does not exist in fail2ban: add it (see deploy/fail2ban/jail.d/blocklist-import.conf)")]
    MissingJail(String),
    #[error("{0} previews are already running; try again shortly")]
    PreviewsBusy(usize),
    #[error(transparent)]
    Fail2ban(Fail2banError),
    #[error("download failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("not a usable list: {0}")]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Fail2banError> for BlocklistError {
    fn from(error: Fail2banError) -> Self {
        match error {
            Fail2banError::UnknownJail(jail) => BlocklistError::MissingJail(jail),
            other => BlocklistError::Fail2ban(other),
        }
    }
}

impl From<SourceWriteError> for BlocklistError {
    fn from(error: SourceWriteError) -> Self {
        match error {
            SourceWriteError::NameTaken(name) => BlocklistError::NameTaken(name),
            SourceWriteError::NotFound(id) => BlocklistError::NotFound(id),
            SourceWriteError::JailFixed(jail) => BlocklistError::JailFixed(jail),
            SourceWriteError::Store(e) => BlocklistError::Store(e),
        }
    }
}

/// A source as an operator writes it: empty and zero fields take their
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInput {
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub jail: String,
    pub schedule: String,
    pub cidr_policy: String,
    pub max_bytes: u64,
    pub max_entries: u64,
    /// 0: [`DEFAULT_BAN_MIN_PREFIX_V4`].
    pub ban_min_prefix_v4: u32,
    /// 0: [`DEFAULT_BAN_MIN_PREFIX_V6`].
    pub ban_min_prefix_v6: u32,
}

/// A source with what is known of its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceView {
    pub source: Source,
    /// The schedule in effect (its own, or the default setting).
    pub schedule: String,
    /// Unix seconds; `None` when disabled.
    pub next_run: Option<i64>,
    pub last_run: Option<ImportRun>,
}

/// What a preview looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewTarget {
    Source(i64),
    Url { url: String, cidr_policy: String },
}

/// A list downloaded and read, nothing banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub http_status: u16,
    pub bytes: u64,
    pub sha256: String,
    pub counts: ImportCounts,
    pub entries: Vec<String>,
    pub bad_lines: Vec<BadLine>,
}

/// Releases a hold when dropped (an import that did not reach
/// `finish_import`, a delete that failed) and stops its refresher.
struct HoldGuard {
    blocklists: Blocklists,
    id: i64,
    refresher: tokio::task::JoinHandle<()>,
}

impl HoldGuard {
    /// The source is gone (deleted): nothing to release.
    fn forget(mut self) {
        self.id = 0;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.id == 0 {
            return;
        }
        // finish_import released it already in the usual case: releasing
        // again is a no-op; a drop cannot wait, so a task does it.
        let (store, holder, id) = (self.blocklists.inner.store.clone(), self.blocklists.inner.holder.clone(), self.id);
        tokio::spawn(async move {
            if let Err(error) = store.release_source(id, &holder).await {
                tracing::warn!(%error, id, "cannot release the source; another replica takes it over when stale");
            }
        });
    }
}

impl std::fmt::Debug for HoldGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldGuard").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Blocklist sources and their imports, behind `BlocklistService` and the
/// leader's import jobs.
#[derive(Debug, Clone)]
pub struct Blocklists {
    inner: Arc<Inner>,
}

/// What [`Blocklists`] works with.
#[derive(Debug)]
pub struct BlocklistDeps {
    pub store: Arc<dyn BlocklistStore>,
    /// Where "import now" requests go (the leader takes them).
    pub ledger: Arc<dyn RunLedger>,
    /// This replica (who asked for a run).
    pub replica: String,
    pub fail2ban: Fail2ban,
    pub fetcher: Fetcher,
    pub history: History,
    pub settings: RuntimeSettings,
    pub clock: Arc<dyn Clock>,
    pub config: BlocklistSettings,
}

#[derive(Debug)]
struct Inner {
    deps: BlocklistDeps,
    /// This process as a holder of sources: `replica#random`.
    holder: String,
    /// One import at a time in this process: sources share the jail's
    /// bans, and fail2ban serves one command at a time anyway.
    importing: Mutex<()>,
    previews: Semaphore,
}

impl std::ops::Deref for Inner {
    type Target = BlocklistDeps;

    fn deref(&self) -> &BlocklistDeps {
        &self.deps
    }
}

impl Blocklists {
    pub fn new(deps: BlocklistDeps) -> Self {
        let holder = format!("{}#{:016x}", deps.replica, rand::random::<u64>());
        Self {
            inner: Arc::new(Inner {
                deps,
                holder,
                importing: Mutex::new(()),
                previews: Semaphore::new(PREVIEWS_AT_ONCE),
            }),
        }
    }

    /// At start: releases the holds an earlier process of this replica
    /// left (it has ended), and moves rows of the text tables of before
    /// into the byte tables.
    pub async fn start(&self) -> Result<(), StoreError> {
        let prefix = format!("{}#", self.inner.replica);
        let released = self.inner.store.release_holds_of(&prefix, &self.inner.holder).await?;
        if released > 0 {
            tracing::warn!(released, "released the holds of this replica's previous process");
        }
        let moved = self.inner.store.upgrade_legacy().await?;
        if moved > 0 {
            tracing::info!(moved, "blocklist entries and bans moved to the compact tables");
        }
        Ok(())
    }

    /// Holds `source` for this process until the guard is dropped,
    /// refreshing the hold meanwhile.
    async fn take_hold(&self, source: &Source) -> Result<HoldGuard, BlocklistError> {
        let now = self.inner.clock.now();
        let store = &self.inner.store;
        if !store.hold_source(source.id, &self.inner.holder, now, now - STALE_HOLD).await? {
            let current = self.get(source.id).await?;
            let (by, since) = current.hold.map_or((String::new(), now), |h| (h.by, h.since));
            return Err(BlocklistError::Busy { id: source.id, by, since });
        }
        let (store, clock, holder, id) =
            (self.inner.store.clone(), self.inner.clock.clone(), self.inner.holder.clone(), source.id);
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD_REFRESH).await;
                match store.refresh_hold(id, &holder, clock.now()).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(id, "the hold on the source was taken over"),
                    Err(error) => tracing::warn!(%error, id, "cannot refresh the hold on the source"),
                }
            }
        });
        Ok(HoldGuard { blocklists: self.clone(), id: source.id, refresher })
    }

    /// Checks `input` and fills in its defaults.
    async fn spec(&self, input: &SourceInput) -> Result<SourceSpec, BlocklistError> {
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(InvalidArgument::new("name", format!("must be 1 to {MAX_NAME_LEN} characters")).into());
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
            return Err(InvalidArgument::new(
                "name",
                format!("character {bad:?} is not allowed (letters, digits, . _ -)"),
            )
            .into());
        }
        if input.url.len() > MAX_URL_LEN {
            return Err(InvalidArgument::new("url", format!("longer than {MAX_URL_LEN} characters")).into());
        }
        let url = self.inner.fetcher.check_target(input.url.trim()).await.map_err(|e| match e {
            FetchError::Forbidden { host, addr } => InvalidArgument::new(
                "url",
                format!(
                    "{host} resolves to {addr}, not a public address (start the service with \
                     --blocklist-allow-private to allow private targets)"
                ),
            ),
            other => InvalidArgument::new("url", other.to_string()),
        })?;
        let jail = if input.jail.trim().is_empty() { DEFAULT_JAIL } else { input.jail.trim() };
        let jail = JailName::parse("jail", jail)?;
        let schedule = input.schedule.trim().to_owned();
        if !schedule.is_empty() {
            check_cron("schedule", &schedule)?;
        }
        let cidr_policy = policy(&input.cidr_policy)?;
        let max_bytes = limit("max_bytes", input.max_bytes, DEFAULT_MAX_BYTES, MAX_MAX_BYTES)?;
        let max_entries = limit("max_entries", input.max_entries, DEFAULT_MAX_ENTRIES, MAX_MAX_ENTRIES)?;
        let ban_min_prefix_v4 = prefix_bound(
            "ban_min_prefix_v4",
            input.ban_min_prefix_v4,
            DEFAULT_BAN_MIN_PREFIX_V4,
            BROADEST_BAN_PREFIX_V4,
            32,
        )?;
        let ban_min_prefix_v6 = prefix_bound(
            "ban_min_prefix_v6",
            input.ban_min_prefix_v6,
            DEFAULT_BAN_MIN_PREFIX_V6,
            BROADEST_BAN_PREFIX_V6,
            128,
        )?;
        // The jail must exist: an import into a missing jail would fail at
        // every run.
        if !self.inner.fail2ban.jail_names().await?.iter().any(|j| j == jail.as_str()) {
            return Err(BlocklistError::MissingJail(jail.to_string()));
        }
        Ok(SourceSpec {
            name: name.to_owned(),
            url: url.to_string(),
            enabled: input.enabled,
            jail: jail.to_string(),
            schedule,
            cidr_policy,
            max_bytes,
            max_entries,
            ban_min_prefix_v4,
            ban_min_prefix_v6,
        })
    }

    pub async fn create(&self, input: &SourceInput) -> Result<Source, BlocklistError> {
        let spec = self.spec(input).await?;
        let source = self.inner.store.create_source(&spec, self.inner.clock.now()).await?;
        tracing::info!(id = source.id, name = %source.spec.name, "blocklist source created");
        Ok(source)
    }

    pub async fn update(&self, id: i64, input: &SourceInput) -> Result<Source, BlocklistError> {
        let spec = self.spec(input).await?;
        let current = self.get(id).await?;
        // The jail is checked again in the UPDATE itself (an import may
        // take the source in between).
        if current.spec.jail != spec.jail && current.jail_fixed {
            return Err(BlocklistError::JailFixed(current.spec.jail));
        }
        let source = self.inner.store.update_source(id, &spec, self.inner.clock.now()).await?;
        tracing::info!(id, name = %source.spec.name, "blocklist source updated");
        Ok(source)
    }

    pub async fn get(&self, id: i64) -> Result<Source, BlocklistError> {
        self.inner.store.source(id).await?.ok_or(BlocklistError::NotFound(id))
    }

    pub async fn exists(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.inner.store.source(id).await?.is_some())
    }

    pub async fn list(&self) -> Result<Vec<Source>, BlocklistError> {
        Ok(self.inner.store.sources().await?)
    }

    /// The enabled sources and the schedule each runs on.
    pub async fn scheduled(&self, schedules: &Schedules) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(self
            .inner
            .store
            .sources()
            .await?
            .into_iter()
            .filter(|s| s.spec.enabled)
            .map(|s| (s.id, effective_schedule(&s.spec, schedules).to_owned()))
            .collect())
    }

    /// `sources` as the API shows them: with the schedule in effect, the
    /// next run of an enabled one, and the latest run.
    pub async fn views(&self, sources: Vec<Source>) -> Result<Vec<SourceView>, BlocklistError> {
        let schedules = self.inner.settings.get().await?.schedules;
        let now = self.inner.clock.now();
        let mut views = Vec::with_capacity(sources.len());
        for source in sources {
            let schedule = effective_schedule(&source.spec, &schedules).to_owned();
            let next_run = if source.spec.enabled { crate::jobs::next_run(&schedule, now) } else { None };
            let last_run = self.inner.store.runs(source.id, None, 1).await?.into_iter().next();
            views.push(SourceView { source, schedule, next_run, last_run });
        }
        Ok(views)
    }

    /// One source as the API shows it ([`Blocklists::views`]).
    pub async fn view(&self, source: Source) -> Result<SourceView, BlocklistError> {
        let mut views = self.views(vec![source]).await?;
        views.pop().ok_or(BlocklistError::Store(StoreError::Corrupt("a view went missing".into())))
    }

    /// Deletes source `id`: first makes its jail converge without its list
    /// (unbanning what only it listed and an import banned), then forgets
    /// it. Returns how many were unbanned.
    pub async fn delete(&self, id: i64) -> Result<u64, BlocklistError> {
        let source = self.get(id).await?;
        // Refused at once while this source is imported; behind an import
        // of another source of this process (they share the jail's bans).
        let hold = self.take_hold(&source).await?;
        let _one_at_a_time = self.inner.importing.lock().await;
        let source = self.get(id).await?;
        let jail = JailName::parse("jail", &source.spec.jail)?;
        let ignore = self.inner.fail2ban.ignore_list(&jail).await?;
        let exclusions = Exclusions::new(&ignore, &self.inner.config.never_ban);
        let others = self.jail_sources(&source.spec.jail, id).await?;
        let listings = others.iter().map(|s| import::Listing::stored(s, false)).collect();
        let mut counts = ImportCounts::default();
        let converged = self
            .converge(&jail, &source.spec.name, listings, &exclusions, &mut counts)
            .await
            .map_err(BlocklistError::Incomplete)?;
        if let Some(stopped) = converged.stopped {
            // Its bans are not all lifted: the source stays, to try again.
            return Err(BlocklistError::Incomplete(stopped));
        }
        self.inner.store.delete_source(id).await?;
        hold.forget();
        tracing::info!(id, name = %source.spec.name, unbanned = counts.unbanned, "blocklist source deleted");
        Ok(counts.unbanned)
    }

    /// The operator's exceptions, of one jail or all.
    pub async fn exceptions(&self, jail: Option<&JailName>) -> Result<Vec<BanException>, BlocklistError> {
        Ok(self.inner.store.exceptions(jail.map(JailName::as_str)).await?)
    }

    /// Drops an exception: the next import bans the address again if a
    /// list has it.
    pub async fn delete_exception(&self, jail: &JailName, net: &IpNet) -> Result<(), BlocklistError> {
        if self.inner.store.delete_exception(jail.as_str(), net).await? {
            tracing::info!(%jail, %net, "blocklist exception removed");
            Ok(())
        } else {
            Err(BlocklistError::NoException { jail: jail.to_string(), net: net.to_string() })
        }
    }

    /// Downloads and reads a list; bans nothing, stores nothing.
    pub async fn preview(&self, target: &PreviewTarget, limit: usize) -> Result<Preview, BlocklistError> {
        let _slot = self.inner.previews.try_acquire().map_err(|_| BlocklistError::PreviewsBusy(PREVIEWS_AT_ONCE))?;
        let (url, max_bytes, limits, ignore) = match target {
            PreviewTarget::Source(id) => {
                let source = self.get(*id).await?;
                let jail = JailName::parse("jail", &source.spec.jail)?;
                // The jail's ignoreip when fail2ban answers; the preview
                // still works without it.
                let ignore = self.inner.fail2ban.ignore_list(&jail).await.unwrap_or_default();
                let max_bytes = u64::try_from(source.spec.max_bytes).unwrap_or(0);
                (source.spec.url.clone(), max_bytes, parse_limits(&source.spec), ignore)
            }
            PreviewTarget::Url { url, cidr_policy } => {
                let url = self
                    .inner
                    .fetcher
                    .check_target(url.trim())
                    .await
                    .map_err(|e| InvalidArgument::new("url", e.to_string()))?;
                let limits = ParseLimits::new(policy(cidr_policy)?, to_usize(DEFAULT_MAX_ENTRIES));
                (url.to_string(), DEFAULT_MAX_BYTES, limits, Vec::new())
            }
        };
        let download = match self.inner.fetcher.fetch(&url, max_bytes, &Validators::default(), &limits).await {
            Ok(Fetched::Body(download)) => download,
            // Nothing was sent to make it conditional.
            Ok(Fetched::NotModified { status }) => return Err(FetchError::Status { status }.into()),
            Err(FetchError::Parse { error, .. }) => return Err(error.into()),
            Err(error) => return Err(error.into()),
        };
        let parsed = download.parsed;
        let (mut entries, mut counts) = (parsed.entries, parsed.counts);
        Exclusions::new(&ignore, &self.inner.config.never_ban).apply(&mut entries, &mut counts);
        Ok(Preview {
            http_status: download.status,
            bytes: download.bytes,
            sha256: download.sha256,
            counts,
            entries: entries.iter().take(limit).map(entry_text).collect(),
            bad_lines: parsed.bad_lines,
        })
    }

    /// Asks the leader for an import of `id`, or of every enabled source;
    /// returns the sources asked for.
    pub async fn import_now(&self, id: Option<i64>) -> Result<Vec<i64>, BlocklistError> {
        let ids = match id {
            Some(id) => vec![self.get(id).await?.id],
            None => self.inner.store.sources().await?.into_iter().filter(|s| s.spec.enabled).map(|s| s.id).collect(),
        };
        for id in &ids {
            let job = import_job(*id);
            let request = self.inner.ledger.request_run(&job, &self.inner.replica).await?;
            tracing::info!(%job, request, "import requested");
        }
        Ok(ids)
    }

    /// The newest run of each of `ids` (`None`: it never ran).
    pub async fn latest_runs(&self, ids: &[i64]) -> Result<Vec<Option<ImportRun>>, BlocklistError> {
        let mut latest = Vec::with_capacity(ids.len());
        for id in ids {
            latest.push(self.inner.store.runs(*id, None, 1).await?.into_iter().next());
        }
        Ok(latest)
    }

    /// Waits until each of `ids` has a run newer than `after` (its newest
    /// run id when asked, 0 for none), for at most `timeout`; returns the
    /// new runs found.
    pub async fn wait_runs(
        &self,
        ids: &[i64],
        after: &[i64],
        timeout: Duration,
    ) -> Result<Vec<ImportRun>, BlocklistError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let latest = self.latest_runs(ids).await?;
            let done: Vec<ImportRun> =
                latest.into_iter().zip(after).filter_map(|(run, after)| run.filter(|r| r.id > *after)).collect();
            if done.len() == ids.len() || tokio::time::Instant::now() >= deadline {
                return Ok(done);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `Busy` naming the holder if one of `ids` is held (an import or a
    /// delete runs, or its process died less than [`STALE_HOLD`] ago);
    /// with `stale`, also by a holder that is gone (not taken over yet).
    pub async fn check_not_held(&self, ids: &[i64], stale: bool) -> Result<(), BlocklistError> {
        let now = self.inner.clock.now();
        for id in ids {
            let hold = self.inner.store.source(*id).await?.and_then(|s| s.hold);
            if let Some(hold) = hold.filter(|h| stale || h.since >= now - STALE_HOLD) {
                let state = if hold.since < now - STALE_HOLD { "held by a process that is gone" } else { "held" };
                tracing::info!(id, by = %hold.by, state, "import asked for a held source");
                return Err(BlocklistError::Busy { id: *id, by: hold.by, since: hold.since });
            }
        }
        Ok(())
    }

    /// A source's runs, newest first: those with an id below `before`.
    pub async fn runs(
        &self,
        source_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ImportRun>, BlocklistError> {
        self.get(source_id).await?;
        Ok(self.inner.store.runs(source_id, before, limit).await?)
    }

    pub async fn run(&self, id: i64) -> Result<ImportRun, BlocklistError> {
        self.inner.store.run(id).await?.ok_or(BlocklistError::NotFound(id))
    }

    /// Imports source `id` now, in this process (the leader's import
    /// job): one run, recorded.
    pub async fn import_source(&self, id: i64, trigger: RunTrigger) -> Result<ImportRun, BlocklistError> {
        self.import(id, trigger).await
    }
}

/// The run ledger's name of source `id`'s import job.
pub fn import_job(id: i64) -> String {
    format!("{IMPORT_JOB}:{id}")
}

/// The prefix of an import job's name.
pub const IMPORT_JOB: &str = "blocklist_import";

/// The schedule `spec` runs on: its own, or the runtime setting's.
pub fn effective_schedule<'a>(spec: &'a SourceSpec, schedules: &'a Schedules) -> &'a str {
    if spec.schedule.is_empty() { &schedules.blocklist_import } else { &spec.schedule }
}

fn policy(text: &str) -> Result<CidrPolicy, InvalidArgument> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(CidrPolicy::default());
    }
    text.parse().map_err(|_| InvalidArgument::new("cidr_policy", format!("{text:?} is not skip, ban or expand")))
}

/// How a source's list is read (imports and previews alike).
fn parse_limits(spec: &SourceSpec) -> ParseLimits {
    ParseLimits {
        policy: spec.cidr_policy,
        max_entries: usize::try_from(spec.max_entries).unwrap_or(0),
        ban_min_prefix_v4: spec.ban_min_prefix_v4,
        ban_min_prefix_v6: spec.ban_min_prefix_v6,
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A broadest-network bound of `ban`: 0 is `default`; else a prefix
/// length from `broadest` to `longest` (the family's host prefix).
fn prefix_bound(
    field: &'static str,
    value: u32,
    default: u8,
    broadest: u8,
    longest: u8,
) -> Result<u8, InvalidArgument> {
    if value == 0 {
        return Ok(default);
    }
    match u8::try_from(value) {
        Ok(prefix) if (broadest..=longest).contains(&prefix) => Ok(prefix),
        _ => Err(InvalidArgument::new(
            field,
            format!(
                "{value} is not a prefix length from {broadest} to {longest} (0: {default}); networks broader \
                 than a /{broadest} are never banned"
            ),
        )),
    }
}

fn limit(field: &'static str, value: u64, default: u64, max: u64) -> Result<i64, InvalidArgument> {
    let value = if value == 0 { default } else { value };
    if value > max {
        return Err(InvalidArgument::new(field, format!("at most {max}")));
    }
    i64::try_from(value).map_err(|_| InvalidArgument::new(field, format!("at most {max}")))
}
