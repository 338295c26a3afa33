//! System endpoints: ping, version, info, disk usage and the event stream.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, Method};
use serde::Deserialize;

use crate::containers::ContainerSummary;
use crate::error::Result;
use crate::images::ImageSummary;
use crate::util::{Filters, nullable};
use crate::volumes::Volume;
use crate::{Body, Docker, Ping, Query};

/// System endpoints; see [`Docker::system`].
#[derive(Debug, Clone, Copy)]
pub struct System<'a> {
    docker: &'a Docker,
}

impl<'a> System<'a> {
    pub(crate) fn new(docker: &'a Docker) -> Self {
        Self { docker }
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<Ping> {
        self.docker.ping().await
    }

    /// `GET /version`: the daemon's version and components.
    pub async fn version(&self) -> Result<Version> {
        self.docker.json(Method::GET, "/version", None).await
    }

    /// `GET /info`: system-wide information.
    pub async fn info(&self) -> Result<Info> {
        self.docker.json(Method::GET, "/info", None).await
    }

    /// `GET /system/df`: disk usage of images, containers, volumes and build cache.
    pub async fn disk_usage(&self) -> Result<DiskUsage> {
        self.docker.json(Method::GET, "/system/df", None).await
    }

    /// `GET /events`: the daemon's events as they happen (and those since
    /// [`EventsOptions::since`]). The stream ends at `until`, or never.
    pub async fn events(
        &self,
        options: &EventsOptions,
    ) -> Result<BoxStream<'static, Result<Event>>> {
        let mut q = Query::new();
        q.opt("since", options.since.as_deref())
            .opt("until", options.until.as_deref())
            .json("filters", &options.filters);
        let path = format!("/events{}", q.as_str());
        let resp = self
            .docker
            .request(Method::GET, &path, HeaderMap::new(), Body::empty())
            .await?;
        Ok(self.docker.json_stream(resp).boxed())
    }
}

/// Options for [`System::events`].
#[derive(Debug, Clone, Default)]
pub struct EventsOptions {
    since: Option<String>,
    until: Option<String>,
    filters: Filters,
}

impl EventsOptions {
    /// All events from now on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also replay the events since this time (unix seconds, `seconds.nanos`, or a
    /// duration such as `10m` relative to the daemon's clock).
    pub fn since(mut self, since: impl Into<String>) -> Self {
        self.since = Some(since.into());
        self
    }

    /// End the stream at this time (same forms as `since`).
    pub fn until(mut self, until: impl Into<String>) -> Self {
        self.until = Some(until.into());
        self
    }

    /// Only events that match (`type=container`, `container=<id>`, `event=start`,
    /// `label=...`).
    pub fn filters(mut self, filters: Filters) -> Self {
        self.filters = filters;
        self
    }
}

/// One daemon event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The object type: `container`, `image`, `volume`, `network`, `daemon`, ...
    #[serde(rename = "Type", default)]
    pub kind: Option<String>,
    /// What happened: `create`, `start`, `die`, `tag`, `pull`, ...
    #[serde(rename = "Action", default)]
    pub action: Option<String>,
    /// The object it happened to.
    #[serde(rename = "Actor", default)]
    pub actor: Option<EventActor>,
    /// `local` or `swarm`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Unix time in seconds.
    #[serde(default)]
    pub time: Option<i64>,
    /// Unix time in nanoseconds.
    #[serde(default, rename = "timeNano")]
    pub time_nano: Option<i64>,
}

/// The object an [`Event`] is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct EventActor {
    /// Its id (container id, image reference, volume name).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Extra attributes (labels, `name`, `image`, `exitCode`, ...).
    #[serde(default, deserialize_with = "nullable")]
    pub attributes: BTreeMap<String, String>,
}

/// The answer to `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Version {
    /// Engine version (`20.10.24`).
    #[serde(default)]
    pub version: Option<String>,
    /// Newest API version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Oldest API version supported.
    #[serde(default, rename = "MinAPIVersion")]
    pub min_api_version: Option<String>,
    /// Source commit.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Go version it was built with.
    #[serde(default)]
    pub go_version: Option<String>,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: Option<String>,
    /// Architecture (`amd64`).
    #[serde(default)]
    pub arch: Option<String>,
    /// Kernel version.
    #[serde(default)]
    pub kernel_version: Option<String>,
    /// Build time.
    #[serde(default)]
    pub build_time: Option<String>,
    /// The engine's components (Engine, containerd, runc, ...).
    #[serde(default, deserialize_with = "nullable")]
    pub components: Vec<Component>,
}

/// A component listed by `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Component {
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
}

/// The answer to `GET /info` (the commonly used fields).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Info {
    /// Daemon id.
    #[serde(default, rename = "ID")]
    pub id: Option<String>,
    /// Host name.
    #[serde(default)]
    pub name: Option<String>,
    /// Engine version.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Containers in all.
    #[serde(default)]
    pub containers: Option<i64>,
    /// Running containers.
    #[serde(default)]
    pub containers_running: Option<i64>,
    /// Images.
    #[serde(default)]
    pub images: Option<i64>,
    /// Storage driver (`overlay2`).
    #[serde(default)]
    pub driver: Option<String>,
    /// Where the daemon keeps its data.
    #[serde(default)]
    pub docker_root_dir: Option<String>,
    /// Operating system description.
    #[serde(default)]
    pub operating_system: Option<String>,
    /// `linux` or `windows`.
    #[serde(default, rename = "OSType")]
    pub os_type: Option<String>,
    /// Architecture (`x86_64`).
    #[serde(default)]
    pub architecture: Option<String>,
    /// Kernel version.
    #[serde(default)]
    pub kernel_version: Option<String>,
    /// CPUs.
    #[serde(default, rename = "NCPU")]
    pub ncpu: Option<i64>,
    /// Memory in bytes.
    #[serde(default)]
    pub mem_total: Option<i64>,
    /// Whether experimental features are on.
    #[serde(default)]
    pub experimental_build: Option<bool>,
    /// Daemon labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Vec<String>,
}

/// The answer to `GET /system/df`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct DiskUsage {
    /// Bytes used by image layers.
    #[serde(default)]
    pub layers_size: Option<i64>,
    /// Images.
    #[serde(default, deserialize_with = "nullable")]
    pub images: Vec<ImageSummary>,
    /// Containers.
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<ContainerSummary>,
    /// Volumes.
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<Volume>,
    /// Build cache records.
    #[serde(default, deserialize_with = "nullable")]
    pub build_cache: Vec<BuildCacheRecord>,
}

/// A build cache record in [`DiskUsage`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct BuildCacheRecord {
    /// Record id.
    #[serde(default, rename = "ID")]
    pub id: String,
    /// Record type (`regular`, `source.local`, ...).
    #[serde(default)]
    pub r#type: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether a build uses it now.
    #[serde(default)]
    pub in_use: bool,
    /// Whether it is shared with other records.
    #[serde(default)]
    pub shared: bool,
    /// Bytes.
    #[serde(default)]
    pub size: i64,
}
