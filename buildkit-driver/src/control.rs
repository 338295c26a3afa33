//! Control operations beyond solving: disk usage, prune, workers, info, build history.

use buildkit_proto::moby::buildkit::v1::types::{BuildkitVersion, WorkerRecord};
use buildkit_proto::moby::buildkit::v1::{
    BuildHistoryEvent, BuildHistoryRequest, DiskUsageRequest, InfoRequest, ListWorkersRequest,
    PruneRequest, UsageRecord,
};
use futures_util::{Stream, StreamExt};

use crate::driver::Driver;
use crate::error::{Error, Result};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove everything, not only what the GC policy would.
    pub all: bool,
    /// containerd-style filters (`type==regular`, `until=24h`).
    pub filters: Vec<String>,
    /// Keep records used within this many seconds.
    pub keep_duration_secs: i64,
    /// Keep this much space (bytes).
    pub reserved_space: i64,
}

/// The daemon's cache records, optionally filtered.
pub async fn disk_usage(driver: &dyn Driver, filters: Vec<String>) -> Result<Vec<UsageRecord>> {
    let mut c = driver.control().await?;
    Ok(c.disk_usage(DiskUsageRequest {
        filter: filters,
        age_limit: 0,
    })
    .await
    .map_err(Error::call("DiskUsage"))?
    .into_inner()
    .record)
}

/// Prunes the cache; returns the removed records.
pub async fn prune(driver: &dyn Driver, opts: PruneOptions) -> Result<Vec<UsageRecord>> {
    let mut c = driver.control().await?;
    let mut stream = c
        .prune(PruneRequest {
            filter: opts.filters,
            all: opts.all,
            keep_duration: opts.keep_duration_secs * 1_000_000_000,
            reserved_space: opts.reserved_space,
            ..Default::default()
        })
        .await
        .map_err(Error::call("Prune"))?
        .into_inner();
    let mut removed = Vec::new();
    while let Some(r) = stream.next().await {
        removed.push(r.map_err(Error::call("Prune"))?);
    }
    Ok(removed)
}

/// The daemon's workers.
pub async fn workers(driver: &dyn Driver) -> Result<Vec<WorkerRecord>> {
    let mut c = driver.control().await?;
    Ok(c.list_workers(ListWorkersRequest::default())
        .await
        .map_err(Error::call("ListWorkers"))?
        .into_inner()
        .record)
}

/// BuildKit's version (v0.11+; older daemons answer Unimplemented).
pub async fn info(driver: &dyn Driver) -> Result<BuildkitVersion> {
    let mut c = driver.control().await?;
    c.info(InfoRequest {})
        .await
        .map_err(Error::call("Info"))?
        .into_inner()
        .buildkit_version
        .ok_or_else(|| Error::Invalid("Info returned no version".into()))
}

/// Build history events: the records so far and, unless `active_only` with
/// `early_exit`, updates as builds start and finish.
pub async fn build_history(
    driver: &dyn Driver,
    request: BuildHistoryRequest,
) -> Result<impl Stream<Item = Result<BuildHistoryEvent>> + use<>> {
    let mut c = driver.control().await?;
    let stream = c
        .listen_build_history(request)
        .await
        .map_err(Error::call("ListenBuildHistory"))?
        .into_inner();
    Ok(stream.map(|r| r.map_err(Error::call("ListenBuildHistory"))))
}
