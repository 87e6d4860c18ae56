//! `bangui.control.v1.SettingsService`.

use std::time::Duration;

use bangui_proto::{
    control::v1::{
        self as pb, GetSettingsRequest, GetSettingsResponse, UpdateSettingsRequest, UpdateSettingsResponse,
        settings_service_server::SettingsService,
    },
    prost_types,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::invalid;
use crate::{
    error::InvalidArgument,
    settings::{RuntimeSettings, Settings, SettingsUpdate},
};

/// The SettingsService handlers.
#[derive(Debug, Clone)]
pub struct SettingsApi {
    settings: RuntimeSettings,
}

impl SettingsApi {
    pub fn new(settings: RuntimeSettings) -> Self {
        Self { settings }
    }
}

fn to_proto_duration(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: 0 })
}

fn from_proto_duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, InvalidArgument> {
    d.map(|d| {
        let seconds = u64::try_from(d.seconds).map_err(|_| InvalidArgument::new(field, "must not be negative"))?;
        if d.nanos != 0 {
            return Err(InvalidArgument::new(field, "must be whole seconds"));
        }
        Ok(Duration::from_secs(seconds))
    })
    .transpose()
}

impl From<Settings> for pb::Settings {
    fn from(s: Settings) -> Self {
        pb::Settings {
            session_duration: to_proto_duration(s.session_duration),
            geo_cache_retention: to_proto_duration(s.geo_cache_retention),
            history_retention: to_proto_duration(s.history_retention),
            history_backfill: to_proto_duration(s.history_backfill),
            schedules: Some(pb::JobSchedules {
                session_cleanup: s.schedules.session_cleanup,
                geo_cache_purge: s.schedules.geo_cache_purge,
                geo_re_resolve: s.schedules.geo_re_resolve,
                history_sync: s.schedules.history_sync,
                history_geo_backfill: s.schedules.history_geo_backfill,
                history_retention: s.schedules.history_retention,
                blocklist_import: s.schedules.blocklist_import,
            }),
        }
    }
}

impl TryFrom<UpdateSettingsRequest> for SettingsUpdate {
    type Error = InvalidArgument;

    fn try_from(r: UpdateSettingsRequest) -> Result<Self, InvalidArgument> {
        Ok(SettingsUpdate {
            session_duration: from_proto_duration("session_duration", r.session_duration)?,
            geo_cache_retention: from_proto_duration("geo_cache_retention", r.geo_cache_retention)?,
            history_retention: from_proto_duration("history_retention", r.history_retention)?,
            history_backfill: from_proto_duration("history_backfill", r.history_backfill)?,
            session_cleanup_schedule: r.session_cleanup_schedule,
            geo_cache_purge_schedule: r.geo_cache_purge_schedule,
            geo_re_resolve_schedule: r.geo_re_resolve_schedule,
            history_sync_schedule: r.history_sync_schedule,
            history_geo_backfill_schedule: r.history_geo_backfill_schedule,
            history_retention_schedule: r.history_retention_schedule,
            blocklist_import_schedule: r.blocklist_import_schedule,
        })
    }
}

#[tonic::async_trait]
impl SettingsService for SettingsApi {
    #[instrument(skip_all, fields(rpc = "GetSettings"))]
    async fn get_settings(
        &self,
        _request: Request<GetSettingsRequest>,
    ) -> Result<Response<GetSettingsResponse>, Status> {
        let settings = self.settings.get().await.map_err(crate::settings::SettingsError::from)?;
        Ok(Response::new(GetSettingsResponse { settings: Some(settings.into()) }))
    }

    #[instrument(skip_all, fields(rpc = "UpdateSettings"))]
    async fn update_settings(
        &self,
        request: Request<UpdateSettingsRequest>,
    ) -> Result<Response<UpdateSettingsResponse>, Status> {
        let update = SettingsUpdate::try_from(request.into_inner()).map_err(invalid)?;
        let settings = self.settings.update(&update).await?;
        tracing::info!(?update, "settings changed");
        Ok(Response::new(UpdateSettingsResponse { settings: Some(settings.into()) }))
    }
}
