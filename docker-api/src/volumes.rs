//! Volume endpoints: create, inspect, list and remove.

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result};
use crate::util::{Filters, nullable, path};
use crate::{Body, Docker, Query};

/// Volume endpoints; see [`Docker::volumes`].
#[derive(Debug, Clone, Copy)]
pub struct Volumes<'a> {
    docker: &'a Docker,
}

impl<'a> Volumes<'a> {
    pub(crate) fn new(docker: &'a Docker) -> Self {
        Self { docker }
    }

    /// `POST /volumes/create`.
    pub async fn create(&self, options: &VolumeOptions) -> Result<Volume> {
        let body = Body::json(options).map_err(|e| {
            self.docker
                .err(ErrorKind::Config(format!("volume options: {e}")))
        })?;
        self.docker
            .json(Method::POST, "/volumes/create", Some(body))
            .await
    }

    /// `GET /volumes/{name}`.
    pub async fn inspect(&self, name: &str) -> Result<Volume> {
        self.docker
            .json(Method::GET, &format!("/volumes/{}", path(name)), None)
            .await
    }

    /// `GET /volumes`: volumes that match `filters` (`name`, `label`, `dangling`,
    /// `driver`).
    pub async fn list(&self, filters: &Filters) -> Result<VolumeList> {
        let mut q = Query::new();
        q.json("filters", filters);
        self.docker
            .json(Method::GET, &format!("/volumes{}", q.as_str()), None)
            .await
    }

    /// `DELETE /volumes/{name}`; `force` also removes it from its driver when the
    /// driver fails.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let mut q = Query::new();
        q.flag("force", force);
        self.docker
            .call(
                Method::DELETE,
                &format!("/volumes/{}{}", path(name), q.as_str()),
                None,
            )
            .await
    }
}

/// Options for [`Volumes::create`].
///
/// ```
/// let opts = docker_api::VolumeOptions::new().name("cache").label("app", "demo");
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

impl VolumeOptions {
    /// An anonymous volume with the `local` driver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The volume driver.
    pub fn driver(mut self, driver: impl Into<String>) -> Self {
        self.driver = Some(driver.into());
        self
    }

    /// A driver option.
    pub fn driver_opt(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.driver_opts.insert(key.into(), value.into());
        self
    }

    /// A label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// A volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Driver.
    #[serde(default)]
    pub driver: String,
    /// Where it lives on the host.
    #[serde(default)]
    pub mountpoint: String,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// `local` or `global`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Driver options.
    #[serde(default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// The answer to [`Volumes::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct VolumeList {
    /// The volumes.
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<Volume>,
    /// Warnings from the daemon.
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}
