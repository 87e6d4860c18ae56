//! `bangui.control.v1.BlocklistService`.

use std::time::Duration;

use bangui_proto::{
    control::v1::{
        self as pb, CreateSourceRequest, CreateSourceResponse, DeleteExceptionRequest, DeleteExceptionResponse,
        DeleteSourceRequest, DeleteSourceResponse, GetImportRunRequest, GetImportRunResponse, GetSourceRequest,
        GetSourceResponse, ImportNowRequest, ImportNowResponse, ListExceptionsRequest, ListExceptionsResponse,
        ListImportRunsRequest, ListImportRunsResponse, ListSourcesRequest, ListSourcesResponse, PreviewSourceRequest,
        PreviewSourceResponse, UpdateSourceRequest, UpdateSourceResponse, blocklist_service_server::BlocklistService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::invalid;
use crate::{
    blocklist::parse::{entry_text, parse_entry},
    blocklist::{
        BadLine, Blocklists, ImportCounts, ImportRun, Preview, PreviewTarget, Source, SourceInput, SourceView,
    },
    error::InvalidArgument,
};
use bangui_fail2ban::JailName;

/// Longest an `ImportNow` with `wait` waits (under the default RPC
/// deadline, --grpc-request-timeout 60 s).
const IMPORT_WAIT: Duration = Duration::from_secs(50);
/// Runs per page: default and most.
const RUNS_PAGE: (u32, u32) = (20, 100);
/// Entries a preview shows: default and most.
const PREVIEW_ENTRIES: (u32, u32) = (100, 1000);

/// The BlocklistService handlers.
#[derive(Debug, Clone)]
pub struct BlocklistApi {
    blocklists: Blocklists,
}

impl BlocklistApi {
    pub fn new(blocklists: Blocklists) -> Self {
        Self { blocklists }
    }

    async fn shown(&self, source: Source) -> Result<pb::Source, Status> {
        Ok(self.blocklists.view(source).await?.into())
    }
}

impl From<SourceView> for pb::Source {
    fn from(view: SourceView) -> Self {
        let SourceView { source, schedule, next_run, last_run } = view;
        pb::Source {
            id: source.id,
            effective_schedule: schedule,
            etag: source.etag.unwrap_or_default(),
            last_modified: source.last_modified.unwrap_or_default(),
            sha256: source.sha256.unwrap_or_default(),
            created_at: Some(seconds(source.created_at)),
            updated_at: Some(seconds(source.updated_at)),
            last_run: last_run.map(Into::into),
            next_run: next_run.map(seconds),
            spec: Some(pb::SourceSpec {
                name: source.spec.name,
                url: source.spec.url,
                enabled: source.spec.enabled,
                jail: source.spec.jail,
                schedule: source.spec.schedule,
                cidr_policy: source.spec.cidr_policy.as_str().to_owned(),
                max_bytes: u64::try_from(source.spec.max_bytes).unwrap_or(0),
                max_entries: u64::try_from(source.spec.max_entries).unwrap_or(0),
                ban_min_prefix_v4: u32::from(source.spec.ban_min_prefix_v4),
                ban_min_prefix_v6: u32::from(source.spec.ban_min_prefix_v6),
            }),
        }
    }
}

fn seconds(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn input(spec: Option<pb::SourceSpec>) -> Result<SourceInput, Status> {
    let spec = spec.ok_or_else(|| invalid(InvalidArgument::new("spec", "a source spec is required")))?;
    Ok(SourceInput {
        name: spec.name,
        url: spec.url,
        enabled: spec.enabled,
        jail: spec.jail,
        schedule: spec.schedule,
        cidr_policy: spec.cidr_policy,
        max_bytes: spec.max_bytes,
        max_entries: spec.max_entries,
        ban_min_prefix_v4: spec.ban_min_prefix_v4,
        ban_min_prefix_v6: spec.ban_min_prefix_v6,
    })
}

fn id(field: &'static str, id: i64) -> Result<i64, Status> {
    if id <= 0 {
        return Err(invalid(InvalidArgument::new(field, "a source id (a positive number) is required")));
    }
    Ok(id)
}

fn page_size(asked: u32, (default, most): (u32, u32)) -> u32 {
    if asked == 0 { default } else { asked.min(most) }
}

impl From<ImportCounts> for pb::ImportCounts {
    fn from(c: ImportCounts) -> Self {
        pb::ImportCounts {
            valid: c.valid,
            invalid: c.invalid,
            duplicate: c.duplicate,
            reserved: c.reserved,
            ignored: c.ignored,
            never_ban: c.never_ban,
            cidr_skipped: c.cidr_skipped,
            already_banned: c.already_banned,
            newly_banned: c.newly_banned,
            unbanned: c.unbanned,
            failed: c.failed,
            rebanned: c.rebanned,
            excepted: c.excepted,
        }
    }
}

impl From<BadLine> for pb::BadLine {
    fn from(line: BadLine) -> Self {
        pb::BadLine { line: line.line, text: line.text }
    }
}

impl From<ImportRun> for pb::ImportRun {
    fn from(run: ImportRun) -> Self {
        pb::ImportRun {
            id: run.id,
            source_id: run.source_id,
            source_name: run.source_name,
            trigger: run.trigger.as_str().to_owned(),
            started_at: Some(seconds(run.started_at)),
            finished_at: Some(seconds(run.finished_at)),
            status: run.status.as_str().to_owned(),
            http_status: run.http_status.map_or(0, u32::from),
            bytes: run.bytes,
            sha256: run.sha256.unwrap_or_default(),
            counts: Some(run.counts.into()),
            bad_lines: run.bad_lines.into_iter().map(Into::into).collect(),
            error: run.error.unwrap_or_default(),
        }
    }
}

impl From<Preview> for PreviewSourceResponse {
    fn from(p: Preview) -> Self {
        PreviewSourceResponse {
            http_status: u32::from(p.http_status),
            bytes: p.bytes,
            sha256: p.sha256,
            counts: Some(p.counts.into()),
            entries: p.entries,
            bad_lines: p.bad_lines.into_iter().map(Into::into).collect(),
        }
    }
}

#[tonic::async_trait]
impl BlocklistService for BlocklistApi {
    #[instrument(skip_all, fields(rpc = "CreateSource"))]
    async fn create_source(
        &self,
        request: Request<CreateSourceRequest>,
    ) -> Result<Response<CreateSourceResponse>, Status> {
        let source = self.blocklists.create(&input(request.into_inner().spec)?).await?;
        Ok(Response::new(CreateSourceResponse { source: Some(self.shown(source).await?) }))
    }

    #[instrument(skip_all, fields(rpc = "UpdateSource", id = request.get_ref().id))]
    async fn update_source(
        &self,
        request: Request<UpdateSourceRequest>,
    ) -> Result<Response<UpdateSourceResponse>, Status> {
        let request = request.into_inner();
        let source = self.blocklists.update(id("id", request.id)?, &input(request.spec)?).await?;
        Ok(Response::new(UpdateSourceResponse { source: Some(self.shown(source).await?) }))
    }

    #[instrument(skip_all, fields(rpc = "DeleteSource", id = request.get_ref().id))]
    async fn delete_source(
        &self,
        request: Request<DeleteSourceRequest>,
    ) -> Result<Response<DeleteSourceResponse>, Status> {
        let unbanned = self.blocklists.delete(id("id", request.into_inner().id)?).await?;
        Ok(Response::new(DeleteSourceResponse { unbanned }))
    }

    #[instrument(skip_all, fields(rpc = "GetSource", id = request.get_ref().id))]
    async fn get_source(&self, request: Request<GetSourceRequest>) -> Result<Response<GetSourceResponse>, Status> {
        let source = self.blocklists.get(id("id", request.into_inner().id)?).await?;
        Ok(Response::new(GetSourceResponse { source: Some(self.shown(source).await?) }))
    }

    #[instrument(skip_all, fields(rpc = "ListSources"))]
    async fn list_sources(
        &self,
        _request: Request<ListSourcesRequest>,
    ) -> Result<Response<ListSourcesResponse>, Status> {
        let views = self.blocklists.views(self.blocklists.list().await?).await?;
        Ok(Response::new(ListSourcesResponse { sources: views.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "PreviewSource"))]
    async fn preview_source(
        &self,
        request: Request<PreviewSourceRequest>,
    ) -> Result<Response<PreviewSourceResponse>, Status> {
        let request = request.into_inner();
        let target = match (request.id, request.url.trim().is_empty()) {
            (0, true) => {
                return Err(invalid(InvalidArgument::new("id", "give a source id or a url")));
            }
            (0, false) => PreviewTarget::Url { url: request.url, cidr_policy: request.cidr_policy },
            (source, true) => PreviewTarget::Source(id("id", source)?),
            (_, false) => return Err(invalid(InvalidArgument::new("url", "give a source id or a url, not both"))),
        };
        let limit = page_size(request.limit, PREVIEW_ENTRIES) as usize;
        Ok(Response::new(self.blocklists.preview(&target, limit).await?.into()))
    }

    #[instrument(skip_all, fields(rpc = "ImportNow", id = request.get_ref().id))]
    async fn import_now(&self, request: Request<ImportNowRequest>) -> Result<Response<ImportNowResponse>, Status> {
        let request = request.into_inner();
        let source = match request.id {
            0 => None,
            other => Some(id("id", other)?),
        };
        // The newest run of each before asking: a later one is the answer.
        let before = match source {
            Some(one) => self.blocklists.latest_runs(&[one]).await?,
            None => Vec::new(),
        };
        if request.wait
            && let Some(one) = source
        {
            // Held now: its import would wait behind the hold, say so at once.
            self.blocklists.check_not_held(&[one], false).await?;
        }
        let ids = self.blocklists.import_now(source).await?;
        let mut runs = Vec::new();
        if request.wait {
            let before = if before.len() == ids.len() { before } else { self.blocklists.latest_runs(&ids).await? };
            let after: Vec<i64> = before.iter().map(|run| run.as_ref().map_or(0, |r| r.id)).collect();
            runs = self.blocklists.wait_runs(&ids, &after, IMPORT_WAIT).await?;
            if runs.len() < ids.len() {
                // A source without its run: say who holds it, if anyone.
                self.blocklists.check_not_held(&ids, true).await?;
            }
        }
        Ok(Response::new(ImportNowResponse { source_ids: ids, runs: runs.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "ListImportRuns", source = request.get_ref().source_id))]
    async fn list_import_runs(
        &self,
        request: Request<ListImportRunsRequest>,
    ) -> Result<Response<ListImportRunsResponse>, Status> {
        let request = request.into_inner();
        let source = id("source_id", request.source_id)?;
        let before =
            match request.page_token.trim() {
                "" => None,
                token => Some(token.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                    invalid(InvalidArgument::new("page_token", "not a token from a previous response"))
                })?),
            };
        let limit = page_size(request.page_size, RUNS_PAGE);
        let runs = self.blocklists.runs(source, before, limit).await?;
        let next_page_token = if runs.len() == limit as usize {
            runs.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListImportRunsResponse { runs: runs.into_iter().map(Into::into).collect(), next_page_token }))
    }

    #[instrument(skip_all, fields(rpc = "GetImportRun", id = request.get_ref().id))]
    async fn get_import_run(
        &self,
        request: Request<GetImportRunRequest>,
    ) -> Result<Response<GetImportRunResponse>, Status> {
        let run = self.blocklists.run(id("id", request.into_inner().id)?).await?;
        Ok(Response::new(GetImportRunResponse { run: Some(run.into()) }))
    }

    #[instrument(skip_all, fields(rpc = "ListExceptions"))]
    async fn list_exceptions(
        &self,
        request: Request<ListExceptionsRequest>,
    ) -> Result<Response<ListExceptionsResponse>, Status> {
        let request = request.into_inner();
        let jail = match request.jail.trim() {
            "" => None,
            jail => Some(JailName::parse("jail", jail).map_err(invalid)?),
        };
        let exceptions = self.blocklists.exceptions(jail.as_ref()).await?;
        Ok(Response::new(ListExceptionsResponse {
            exceptions: exceptions
                .into_iter()
                .map(|e| pb::BanException {
                    jail: e.jail,
                    entry: entry_text(&e.net),
                    created_at: Some(seconds(e.created_at)),
                })
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(rpc = "DeleteException"))]
    async fn delete_exception(
        &self,
        request: Request<DeleteExceptionRequest>,
    ) -> Result<Response<DeleteExceptionResponse>, Status> {
        let request = request.into_inner();
        let jail = JailName::parse("jail", request.jail.trim()).map_err(invalid)?;
        let net = parse_entry(request.entry.trim()).ok_or_else(|| {
            invalid(InvalidArgument::new("entry", format!("{:?} is not an address or a network", request.entry)))
        })?;
        self.blocklists.delete_exception(&jail, &net).await?;
        Ok(Response::new(DeleteExceptionResponse {}))
    }
}
