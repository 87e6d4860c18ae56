//! One import: download and read the list, then make the jail converge.
//!
//! After an import the jail holds: the union of its sources' lists, minus
//! what is never banned (reserved ranges, the jail's ignoreip,
//! `--never-ban`), minus the operator's exceptions, plus every ban no
//! import made. To get there an import reads what fail2ban actually holds
//! (`get <jail> banip`) every time, also when the list did not change, and
//! walks, in address order, the new list, the other sources' stored lists
//! and the bans imports made (`blocklist_owned`), each a sorted run read a
//! page at a time. For each address:
//!
//! | listed (and not excepted) | banned in fail2ban | an import's ban | then |
//! | --- | --- | --- | --- |
//! | yes | no | no | ban, and the ban is the imports' |
//! | yes | no | yes | fail2ban lost it: ban again |
//! | yes | yes | either | leave it |
//! | no | yes | yes | unban (no list wants it), forget it |
//! | no | no | yes | forget it |
//! | no | either | no | not ours: never touched |
//!
//! An operator's UnbanIp of an import's ban makes an exception and takes it
//! out of `blocklist_owned`; an operator's BanIp takes it out too, so no
//! import lifts it (see [`crate::jails`]).
//!
//! Memory: the new list and fail2ban's bans are sorted vectors of
//! [`IpNet`] (18 bytes an entry, no strings); everything else streams by
//! pages of [`PAGE`] and chunks of [`CHUNK`].
//!
//! Order of writes: a failure at any point never makes an import lift a
//! ban it did not make.
//! 1. a ban is claimed (`own`) after fail2ban made it: a crash between
//!    leaves a ban no import claims, which imports then leave alone;
//! 2. an unban is sent only for bans still claimed just before (an
//!    operator's BanIp in the meantime took it out), and its claim is
//!    dropped after;
//! 3. the source's list, the body it saw and the run row are written last,
//!    in one transaction. A run that did not finish leaves the old list, so
//!    the next run converges from it.

use std::collections::VecDeque;

use ipnet::IpNet;

use super::*;
use crate::{kinds::Event, store::history::LOCAL_HOST};

/// Addresses per fail2ban command.
pub(super) const CHUNK: usize = 500;
/// Stored networks read per statement.
const PAGE: u32 = 10_000;

/// A sorted run of networks the merge reads.
enum Run<'a> {
    /// The list just read (sorted, unique).
    Memory { nets: &'a [IpNet], next: usize },
    /// A source's stored list, a page at a time.
    Listed(Pages),
}

/// A stored sorted run read a page at a time, from after the last one read.
struct Pages {
    key: PageKey,
    page: VecDeque<IpNet>,
    last: Option<IpNet>,
    done: bool,
}

enum PageKey {
    Listed(i64),
    Owned(String),
}

impl Pages {
    fn new(key: PageKey) -> Self {
        Self { key, page: VecDeque::new(), last: None, done: false }
    }

    async fn head(&mut self, store: &dyn BlocklistStore) -> Result<Option<IpNet>, StoreError> {
        if self.page.is_empty() && !self.done {
            let page = match &self.key {
                PageKey::Listed(id) => store.listed_page(*id, self.last.as_ref(), PAGE).await?,
                PageKey::Owned(jail) => store.owned_page(jail, self.last.as_ref(), PAGE).await?,
            };
            self.done = page.len() < PAGE as usize;
            self.last = page.last().copied().or(self.last);
            self.page = page.into();
        }
        Ok(self.page.front().copied())
    }

    fn pop(&mut self) {
        self.page.pop_front();
    }
}

impl Run<'_> {
    async fn head(&mut self, store: &dyn BlocklistStore) -> Result<Option<IpNet>, StoreError> {
        match self {
            Run::Memory { nets, next } => Ok(nets.get(*next).copied()),
            Run::Listed(pages) => pages.head(store).await,
        }
    }

    fn pop(&mut self) {
        match self {
            Run::Memory { next, .. } => *next += 1,
            Run::Listed(pages) => pages.pop(),
        }
    }
}

/// A listing the merge reads: a source's name and its run.
pub(super) struct Listing<'a> {
    name: String,
    run: Run<'a>,
    /// The source being imported (its counts are the run's).
    this: bool,
}

impl<'a> Listing<'a> {
    pub(super) fn memory(name: &str, nets: &'a [IpNet], this: bool) -> Self {
        Listing { name: name.to_owned(), run: Run::Memory { nets, next: 0 }, this }
    }

    pub(super) fn stored(source: &Source, this: bool) -> Self {
        Listing { name: source.spec.name.clone(), run: Run::Listed(Pages::new(PageKey::Listed(source.id))), this }
    }
}

/// The list an import read.
pub(super) enum ListRead {
    /// 304, or the same body as the last good import: the stored list stands.
    Unchanged,
    /// A new list, sorted and unique, after the filters.
    New { nets: Vec<IpNet>, seen: SeenBody },
}

impl Blocklists {
    /// Imports source `id` once and records the run. Only one import runs
    /// at a time in this process; the source is held in the database for
    /// the run (a delete or a jail change waits for it).
    pub(super) async fn import(&self, id: i64, trigger: RunTrigger) -> Result<ImportRun, BlocklistError> {
        let _one_at_a_time = self.inner.importing.lock().await;
        let source = self.get(id).await?;
        let hold = self.take_hold(&source).await?;
        // Read again under the hold: its jail is fixed from here on.
        let source = self.get(id).await?;
        let started_at = self.inner.clock.now();
        let mut run = ImportRun {
            id: 0,
            source_id: id,
            source_name: source.spec.name.clone(),
            trigger,
            started_at,
            finished_at: started_at,
            status: ImportStatus::Failed,
            http_status: None,
            bytes: 0,
            sha256: None,
            counts: ImportCounts::default(),
            bad_lines: Vec::new(),
            error: None,
        };
        let outcome = self.import_held(&source, &mut run).await;
        run.finished_at = self.inner.clock.now();
        let (listed, seen) = match outcome {
            Ok((ListRead::New { nets, seen }, status)) => {
                // A partial import forgets the body it saw, so the next run
                // reads the whole list again.
                let seen = if status == ImportStatus::Ok { seen } else { SeenBody::default() };
                (Some(nets), Some(seen))
            }
            Ok((ListRead::Unchanged, _)) => (None, None),
            Err(error) => {
                run.status = ImportStatus::Failed;
                run.error = Some(error);
                (None, None)
            }
        };
        let commit = ImportCommit { run: &run, listed: listed.as_deref(), seen, holder: &self.inner.holder };
        run.id = self.inner.store.finish_import(&commit, KEEP_RUNS).await?;
        // Released with the run row.
        hold.forget();
        let c = &run.counts;
        tracing::info!(
            source = %source.spec.name, status = %run.status, valid = c.valid, newly_banned = c.newly_banned,
            rebanned = c.rebanned, unbanned = c.unbanned, failed = c.failed, invalid = c.invalid, "blocklist import"
        );
        Ok(run)
    }

    /// The import's work on a held source; fills `run` as it goes. `Err`:
    /// nothing was applied, the reason.
    async fn import_held(&self, source: &Source, run: &mut ImportRun) -> Result<(ListRead, ImportStatus), String> {
        let jail = JailName::parse("jail", &source.spec.jail).map_err(|e| e.to_string())?;
        // The first command to fail2ban: down, or the jail missing, and
        // nothing is applied.
        let ignore = self.inner.fail2ban.ignore_list(&jail).await.map_err(|e| BlocklistError::from(e).to_string())?;
        let exclusions = Exclusions::new(&ignore, &self.inner.config.never_ban);
        let read = self.read_list(source, &exclusions, run).await?;
        run.status = if matches!(read, ListRead::Unchanged) { ImportStatus::Unchanged } else { ImportStatus::Ok };
        let others = self.jail_sources(&source.spec.jail, source.id).await.map_err(|e| e.to_string())?;
        let mut listings: Vec<Listing<'_>> = others.iter().map(|s| Listing::stored(s, false)).collect();
        listings.push(match &read {
            ListRead::New { nets, .. } => Listing::memory(&source.spec.name, nets, true),
            ListRead::Unchanged => Listing::stored(source, true),
        });
        let mut counts = run.counts;
        let outcome = self.converge(&jail, &source.spec.name, listings, &exclusions, &mut counts).await;
        run.counts = counts;
        let outcome = outcome?;
        if let Some(stopped) = outcome.stopped {
            run.status = ImportStatus::Partial;
            run.error = Some(stopped);
        } else if run.counts.failed > 0 {
            run.status = ImportStatus::Partial;
            run.error = Some(format!("fail2ban did not carry out {} bans or unbans", run.counts.failed));
        } else if run.status == ImportStatus::Unchanged && run.counts.newly_banned + run.counts.unbanned > 0 {
            // The list did not change, the jail did: say what was repaired.
            run.status = ImportStatus::Ok;
        }
        let status = run.status;
        Ok((read, status))
    }

    /// Downloads and reads the list, filtered (`Unchanged`: 304, or the
    /// body of the last good import).
    async fn read_list(
        &self,
        source: &Source,
        exclusions: &Exclusions,
        run: &mut ImportRun,
    ) -> Result<ListRead, String> {
        let spec = &source.spec;
        let validators = Validators { etag: source.etag.clone(), last_modified: source.last_modified.clone() };
        let max_bytes = u64::try_from(spec.max_bytes).unwrap_or(DEFAULT_MAX_BYTES);
        let limits = parse_limits(spec);
        let download = match self.inner.fetcher.fetch(&spec.url, max_bytes, &validators, &limits).await {
            Ok(Fetched::NotModified { status }) => {
                run.http_status = Some(status);
                return Ok(ListRead::Unchanged);
            }
            Ok(Fetched::Body(download)) => download,
            Err(FetchError::Parse { status, bytes, sha256, error }) => {
                run.http_status = Some(status);
                run.bytes = bytes;
                run.sha256 = sha256;
                if let ParseError::NotAList { valid, invalid, first_bad } = &error {
                    run.counts.valid = *valid;
                    run.counts.invalid = *invalid;
                    run.bad_lines = first_bad.iter().cloned().collect();
                }
                return Err(format!("not a usable list: {error}"));
            }
            Err(error) => {
                run.http_status = error.http_status();
                return Err(format!("download failed: {error}"));
            }
        };
        run.http_status = Some(download.status);
        run.bytes = download.bytes;
        run.sha256 = Some(download.sha256.clone());
        if source.sha256.as_deref() == Some(download.sha256.as_str()) {
            return Ok(ListRead::Unchanged);
        }
        let seen = SeenBody {
            etag: download.validators.etag,
            last_modified: download.validators.last_modified,
            sha256: Some(download.sha256),
        };
        let parsed = download.parsed;
        run.bad_lines = parsed.bad_lines;
        run.counts = parsed.counts;
        let mut nets = parsed.entries;
        exclusions.apply(&mut nets, &mut run.counts);
        // Sorted and unique from the parser already; cheap to make sure.
        nets.sort_unstable();
        nets.dedup();
        Ok(ListRead::New { nets, seen })
    }

    /// The sources of `jail` other than `except`.
    pub(super) async fn jail_sources(&self, jail: &str, except: i64) -> Result<Vec<Source>, StoreError> {
        Ok(self.inner.store.sources().await?.into_iter().filter(|s| s.spec.jail == jail && s.id != except).collect())
    }

    /// Makes `jail` hold what `listings` list (see the module's table);
    /// `actor` names the import (or delete) in the archive's unbans.
    /// `Err`: nothing could be done at all (fail2ban down at the start).
    pub(super) async fn converge(
        &self,
        jail: &JailName,
        actor: &str,
        mut listings: Vec<Listing<'_>>,
        exclusions: &Exclusions,
        counts: &mut ImportCounts,
    ) -> Result<Converged, String> {
        let store = self.inner.store.as_ref();
        let actual = self.actual_bans(jail).await.map_err(|e| format!("cannot read the jail's bans: {e}"))?;
        let excepted: Vec<IpNet> = {
            let mut nets: Vec<IpNet> = store
                .exceptions(Some(jail.as_str()))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|e| e.net)
                .collect();
            nets.sort_unstable();
            nets
        };
        let mut owned = Pages::new(PageKey::Owned(jail.to_string()));
        let mut mirror = Mirror::new(self, jail, actor, counts);
        loop {
            // The smallest head of every run.
            let mut next: Option<IpNet> = owned.head(store).await.map_err(|e| e.to_string())?;
            for listing in &mut listings {
                if let Some(head) = listing.run.head(store).await.map_err(|e| e.to_string())? {
                    next = Some(next.map_or(head, |n| n.min(head)));
                }
            }
            let Some(net) = next else { break };
            let mut listed_by: Option<usize> = None;
            let mut listed_here = false;
            for (i, listing) in listings.iter_mut().enumerate() {
                if listing.run.head(store).await.map_err(|e| e.to_string())? == Some(net) {
                    listing.run.pop();
                    listed_by = listed_by.or(Some(i));
                    listed_here |= listing.this;
                }
            }
            let is_owned = owned.head(store).await.map_err(|e| e.to_string())? == Some(net);
            if is_owned {
                owned.pop();
            }
            let is_excepted = excepted.binary_search(&net).is_ok();
            if listed_here && is_excepted {
                mirror.counts.excepted += 1;
            }
            let wanted = listed_by.is_some() && !is_excepted && !exclusions.excludes(&net);
            let banned = actual.binary_search(&net).is_ok();
            match (wanted, banned, is_owned) {
                (true, false, _) => {
                    let source = listed_by.map_or(0, |i| i);
                    mirror.queue_ban(net, source, is_owned, &listings).await;
                }
                (true, true, _) => {
                    if listed_here {
                        mirror.counts.already_banned += 1;
                    }
                }
                (false, true, true) => mirror.queue_unban(net).await,
                (false, false, true) => mirror.queue_disown(net).await,
                (false, _, false) => {}
            }
            if mirror.stopped.is_some() {
                break;
            }
        }
        mirror.flush(&listings).await;
        Ok(Converged { stopped: mirror.stopped })
    }

    /// What fail2ban holds in `jail`, sorted (read in bounded memory:
    /// [`Fail2ban::jail_bans`]).
    async fn actual_bans(&self, jail: &JailName) -> Result<Vec<IpNet>, Fail2banError> {
        let bans = self.inner.fail2ban.jail_bans(jail).await?;
        if bans.unreadable > 0 {
            // Not ours to judge: a host name banned by hand, say.
            tracing::info!(%jail, unreadable = bans.unreadable, "bans in the jail that are not addresses");
        }
        Ok(bans.bans)
    }
}

/// How a convergence ended.
#[derive(Debug)]
pub(super) struct Converged {
    /// Set when fail2ban or the database stopped answering midway.
    pub(super) stopped: Option<String>,
}

/// The commands a convergence sends, in chunks.
struct Mirror<'a> {
    blocklists: &'a Blocklists,
    jail: &'a JailName,
    actor: &'a str,
    counts: &'a mut ImportCounts,
    /// To ban: the network, the listing that lists it, whether it was the
    /// imports' already (fail2ban lost it).
    bans: Vec<(IpNet, usize, bool)>,
    unbans: Vec<IpNet>,
    disowns: Vec<IpNet>,
    stopped: Option<String>,
    /// The jail's ban length, for the archive, once read.
    bantime: Option<i64>,
}

impl<'a> Mirror<'a> {
    fn new(blocklists: &'a Blocklists, jail: &'a JailName, actor: &'a str, counts: &'a mut ImportCounts) -> Self {
        Mirror {
            blocklists,
            jail,
            actor,
            counts,
            bans: Vec::new(),
            unbans: Vec::new(),
            disowns: Vec::new(),
            stopped: None,
            bantime: None,
        }
    }

    async fn queue_ban(&mut self, net: IpNet, source: usize, owned: bool, listings: &[Listing<'_>]) {
        self.bans.push((net, source, owned));
        if self.bans.len() >= CHUNK {
            self.ban_chunk(listings).await;
        }
    }

    async fn queue_unban(&mut self, net: IpNet) {
        self.unbans.push(net);
        if self.unbans.len() >= CHUNK {
            self.unban_chunk().await;
        }
    }

    async fn queue_disown(&mut self, net: IpNet) {
        self.disowns.push(net);
        if self.disowns.len() >= CHUNK {
            self.disown_chunk().await;
        }
    }

    /// Sends what is pending.
    async fn flush(&mut self, listings: &[Listing<'_>]) {
        if self.stopped.is_none() && !self.bans.is_empty() {
            self.ban_chunk(listings).await;
        }
        if self.stopped.is_none() && !self.unbans.is_empty() {
            self.unban_chunk().await;
        }
        if self.stopped.is_none() && !self.disowns.is_empty() {
            self.disown_chunk().await;
        }
        // What was not tried counts as failed.
        self.counts.failed += (self.bans.len() + self.unbans.len()) as u64;
    }

    fn stop(&mut self, why: String) {
        tracing::warn!(jail = %self.jail, reason = %why, "blocklist import stopped");
        self.stopped = Some(why);
    }

    /// Bans the pending chunk and claims what fail2ban newly banned.
    ///
    /// fail2ban answers how many of a `banip` command's addresses it newly
    /// banned. All of them: every one is the imports'. None: every one was
    /// banned meanwhile (from a log, by hand). Some: fail2ban's database
    /// tells which, by the rows written after the command was sent; without
    /// it none is claimed (a ban left behind is safer than lifting one
    /// fail2ban made).
    async fn ban_chunk(&mut self, listings: &[Listing<'_>]) {
        let chunk = std::mem::take(&mut self.bans);
        let inner = &self.blocklists.inner;
        let texts: Vec<String> = chunk.iter().map(|(net, _, _)| entry_text(net)).collect();
        let mark = inner.fail2ban.bans_mark().await;
        let sent = inner.clock.now();
        let newly = match inner.fail2ban.ban_many(self.jail, &texts).await {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX).min(chunk.len()),
            Err(error) => {
                self.counts.failed += chunk.len() as u64;
                self.stop(format!("fail2ban: {error}"));
                return;
            }
        };
        let answered = inner.clock.now();
        self.counts.newly_banned += newly as u64;
        self.counts.already_banned += (chunk.len() - newly) as u64;
        let ours: Vec<usize> = if newly == chunk.len() {
            (0..chunk.len()).collect()
        } else if newly == 0 {
            Vec::new()
        } else {
            let found = match mark {
                Some(mark) => inner.fail2ban.banned_after(self.jail, &texts, mark, newly).await,
                None => None,
            };
            match found {
                Some(found) => {
                    let found: std::collections::HashSet<&str> = found.iter().map(String::as_str).collect();
                    (0..chunk.len()).filter(|i| found.contains(texts[*i].as_str())).collect()
                }
                None => {
                    tracing::warn!(newly, jail = %self.jail, "cannot tell which bans are new without fail2ban's database");
                    Vec::new()
                }
            }
        };
        if ours.is_empty() {
            return;
        }
        self.counts.rebanned += ours.iter().filter(|i| chunk[**i].2).count() as u64;
        let nets: Vec<IpNet> = ours.iter().map(|i| chunk[*i].0).collect();
        if let Err(error) = inner.store.own(self.jail.as_str(), &nets).await {
            // Banned but unclaimed: the next import sees them as banned by
            // someone else and leaves them; never unbanned by an import.
            tracing::warn!(%error, bans = nets.len(), "cannot record the bans this import made");
        }
        // fail2ban stamps every ban of one command with the same moment, as
        // its database has it: the archive uses that stamp, so the history
        // sync knows these bans and does not archive them a second time.
        let first = &texts[ours[0]];
        let stamp = inner.fail2ban.ban_row(self.jail, first, sent - 1, answered + 1).await;
        let at = stamp.map_or(sent, |(at, _)| at);
        let bantime = match stamp {
            Some((_, seconds)) => seconds,
            None => self.bantime().await,
        };
        // The archive row names the source that lists it.
        for (i, listing) in listings.iter().enumerate() {
            let of_source: Vec<String> = ours.iter().filter(|o| chunk[**o].1 == i).map(|o| texts[*o].clone()).collect();
            if !of_source.is_empty() {
                inner
                    .history
                    .record_blocklist(
                        LOCAL_HOST,
                        self.jail.as_str(),
                        &listing.name,
                        &of_source,
                        at,
                        bantime,
                        Event::Ban,
                    )
                    .await;
            }
        }
    }

    /// Unbans the pending chunk: those the imports still answer for.
    async fn unban_chunk(&mut self) {
        let chunk = std::mem::take(&mut self.unbans);
        let inner = &self.blocklists.inner;
        let jail = self.jail.as_str();
        // An operator's BanIp since the walk began took some out.
        let still = match inner.store.owned_of(jail, &chunk).await {
            Ok(still) => still,
            Err(error) => {
                self.counts.failed += chunk.len() as u64;
                self.stop(format!("cannot read which bans imports made: {error}"));
                return;
            }
        };
        if still.is_empty() {
            return;
        }
        let texts: Vec<String> = still.iter().map(entry_text).collect();
        match inner.fail2ban.unban_many(self.jail, &texts).await {
            Ok(n) => self.counts.unbanned += n,
            Err(error) => {
                self.counts.failed += still.len() as u64;
                self.stop(format!("fail2ban: {error}"));
                return;
            }
        }
        if let Err(error) = inner.store.disown(jail, &still).await {
            tracing::warn!(%error, "cannot drop the claims of lifted bans; the next import drops them");
        }
        let at = inner.clock.now();
        inner.history.record_blocklist(LOCAL_HOST, jail, self.actor, &texts, at, 0, Event::Unban).await;
    }

    /// Forgets claims on bans fail2ban no longer holds and no list wants.
    async fn disown_chunk(&mut self) {
        let chunk = std::mem::take(&mut self.disowns);
        if let Err(error) = self.blocklists.inner.store.disown(self.jail.as_str(), &chunk).await {
            tracing::warn!(%error, "cannot drop the claims of lost bans; the next import drops them");
        }
    }

    /// The jail's ban length, for the archive (-1 when it cannot be read:
    /// the jail is meant to ban for good).
    async fn bantime(&mut self) -> i64 {
        if let Some(seconds) = self.bantime {
            return seconds;
        }
        let seconds = self.blocklists.inner.fail2ban.bantime(self.jail).await.unwrap_or(-1);
        self.bantime = Some(seconds);
        seconds
    }
}
