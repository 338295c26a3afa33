//! Image endpoints: build, list, inspect, tag, remove, pull, import, push, load, save
//! and build-cache prune. Everything large (contexts, tars, progress) is streamed.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::auth::{RegistryAuth, X_REGISTRY_AUTH, X_REGISTRY_CONFIG, registry_config};
use crate::error::Result;
use crate::progress::ProgressStream;
use crate::util::{Filters, nullable, path, split_reference};
use crate::{Body, Docker, Query};

const TAR: HeaderValue = HeaderValue::from_static("application/x-tar");

/// Image endpoints; see [`Docker::images`].
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    docker: &'a Docker,
}

impl<'a> Images<'a> {
    pub(crate) fn new(docker: &'a Docker) -> Self {
        Self { docker }
    }

    /// `POST /build`: builds an image from a context tar (any byte stream; gzip is
    /// accepted too) or, with [`BuildOptions::remote`], from a BuildKit session.
    ///
    /// The stream yields the daemon's progress messages, including `aux` payloads
    /// untouched (the image id, BuildKit's `moby.buildkit.trace`). A failed build
    /// ends the stream with an error carrying the daemon's message.
    pub async fn build(&self, options: &BuildOptions, context: Body) -> Result<ProgressStream> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, TAR);
        if !options.registry_config.is_empty() {
            headers.insert(X_REGISTRY_CONFIG, registry_config(&options.registry_config));
        }
        let path = format!("/build{}", options.query().as_str());
        let resp = self
            .docker
            .request_unbounded(Method::POST, &path, headers, context)
            .await?;
        Ok(ProgressStream::new(self.docker, resp))
    }

    /// `GET /images/json`.
    pub async fn list(&self, options: &ListImagesOptions) -> Result<Vec<ImageSummary>> {
        let mut q = Query::new();
        q.flag("all", options.all)
            .flag("digests", options.digests)
            .json("filters", &options.filters);
        self.docker
            .json(Method::GET, &format!("/images/json{}", q.as_str()), None)
            .await
    }

    /// `GET /images/{name}/json`.
    pub async fn inspect(&self, name: &str) -> Result<ImageInspect> {
        self.docker
            .json(Method::GET, &format!("/images/{}/json", path(name)), None)
            .await
    }

    /// `POST /images/{name}/tag`: gives `source` the reference `target`
    /// (`repo[:tag]`; the tag defaults to `latest`).
    pub async fn tag(&self, source: &str, target: &str) -> Result<()> {
        let (repo, tag) = split_reference(target);
        let mut q = Query::new();
        q.push("repo", repo).opt("tag", tag);
        self.docker
            .call(
                Method::POST,
                &format!("/images/{}/tag{}", path(source), q.as_str()),
                None,
            )
            .await
    }

    /// `DELETE /images/{name}`: untags and deletes; returns what was untagged and
    /// deleted.
    pub async fn remove(
        &self,
        name: &str,
        options: &RemoveImageOptions,
    ) -> Result<Vec<ImageDeleted>> {
        let mut q = Query::new();
        q.flag("force", options.force)
            .flag("noprune", options.no_prune);
        self.docker
            .json(
                Method::DELETE,
                &format!("/images/{}{}", path(name), q.as_str()),
                None,
            )
            .await
    }

    /// `POST /images/create?fromImage=...`: pulls an image.
    pub async fn pull(&self, options: &PullOptions) -> Result<ProgressStream> {
        let (repo, tag) = split_reference(&options.reference);
        let mut q = Query::new();
        // Without a tag the daemon would pull every tag of the repository.
        q.push("fromImage", repo)
            .push("tag", tag.unwrap_or("latest"))
            .opt("platform", options.platform.as_deref());
        let mut headers = HeaderMap::new();
        headers.insert(X_REGISTRY_AUTH, options.auth.header_value());
        let resp = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/images/create{}", q.as_str()),
                headers,
                Body::empty(),
            )
            .await?;
        Ok(ProgressStream::new(self.docker, resp))
    }

    /// `POST /images/create?fromSrc=-`: creates a single-layer image from a root
    /// filesystem tar (any byte stream), tagged `reference`.
    pub async fn import(&self, reference: &str, rootfs: Body) -> Result<ProgressStream> {
        let (repo, tag) = split_reference(reference);
        let mut q = Query::new();
        q.push("fromSrc", "-").push("repo", repo).opt("tag", tag);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, TAR);
        let resp = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/images/create{}", q.as_str()),
                headers,
                rootfs,
            )
            .await?;
        Ok(ProgressStream::new(self.docker, resp))
    }

    /// `POST /images/{name}/push`: pushes `reference` (`repo:tag`; without a tag,
    /// every tag of the repository). The final message's aux is a [`PushAux`] with
    /// the manifest digest.
    pub async fn push(&self, reference: &str, auth: &RegistryAuth) -> Result<ProgressStream> {
        let (repo, tag) = split_reference(reference);
        let mut q = Query::new();
        q.opt("tag", tag);
        let mut headers = HeaderMap::new();
        headers.insert(X_REGISTRY_AUTH, auth.header_value());
        let resp = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/images/{}/push{}", path(repo), q.as_str()),
                headers,
                Body::empty(),
            )
            .await?;
        Ok(ProgressStream::new(self.docker, resp))
    }

    /// `POST /images/load`: loads images from a `docker save` tar, streamed from
    /// any byte stream.
    pub async fn load(&self, tar: Body) -> Result<ProgressStream> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, TAR);
        let resp = self
            .docker
            .request_unbounded(Method::POST, "/images/load?quiet=0", headers, tar)
            .await?;
        Ok(ProgressStream::new(self.docker, resp))
    }

    /// `GET /images/get`: exports images (with their tags) as a `docker save` tar,
    /// streamed as it is produced.
    pub async fn save(&self, names: &[&str]) -> Result<BoxStream<'static, Result<Bytes>>> {
        let mut q = Query::new();
        for n in names {
            q.push("names", n);
        }
        let resp = self
            .docker
            .request_unbounded(
                Method::GET,
                &format!("/images/get{}", q.as_str()),
                HeaderMap::new(),
                Body::empty(),
            )
            .await?;
        Ok(self.docker.byte_stream(resp).boxed())
    }

    /// `POST /build/prune`: removes build cache.
    pub async fn prune_build_cache(
        &self,
        options: &BuildCachePruneOptions,
    ) -> Result<BuildCachePruned> {
        let mut q = Query::new();
        q.flag("all", options.all)
            .opt("keep-storage", options.keep_storage.map(|v| v.to_string()))
            .json("filters", &options.filters);
        let resp = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/build/prune{}", q.as_str()),
                HeaderMap::new(),
                Body::empty(),
            )
            .await?;
        self.docker.read_json(resp).await
    }
}

/// Which builder runs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuilderVersion {
    /// The classic builder (`version=1`).
    Classic,
    /// BuildKit (`version=2`); needs a session (see [`BuildOptions::session`]).
    BuildKit,
}

/// An `outputs` entry for BuildKit builds: an exporter type and its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BuildOutput {
    /// Exporter type (`moby`, `local`, `tar`).
    pub r#type: String,
    /// Exporter attributes.
    pub attrs: BTreeMap<String, String>,
}

/// Options for [`Images::build`].
///
/// ```
/// use docker_api::images::{BuildOptions, BuilderVersion};
/// let opts = BuildOptions::new()
///     .tag("app:1")
///     .build_arg("VERSION", "1")
///     .label("org.example", "yes")
///     .network_mode("host")
///     .version(BuilderVersion::Classic);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    dockerfile: Option<String>,
    tags: Vec<String>,
    remote: Option<String>,
    quiet: bool,
    no_cache: bool,
    cache_from: Vec<String>,
    pull: bool,
    rm: Option<bool>,
    force_rm: bool,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    network_mode: Option<String>,
    platform: Option<String>,
    target: Option<String>,
    outputs: Vec<BuildOutput>,
    version: Option<BuilderVersion>,
    session: Option<String>,
    build_id: Option<String>,
    shm_size: Option<u64>,
    extra_hosts: Vec<String>,
    registry_config: BTreeMap<String, RegistryAuth>,
}

impl BuildOptions {
    /// Defaults: the daemon's default builder, `Dockerfile` at the context root.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Dockerfile's path within the context (`dockerfile`).
    pub fn dockerfile(mut self, path: impl Into<String>) -> Self {
        self.dockerfile = Some(path.into());
        self
    }

    /// Adds a name for the result (`t`); may be given several times.
    pub fn tag(mut self, reference: impl Into<String>) -> Self {
        self.tags.push(reference.into());
        self
    }

    /// Where the context comes from instead of the body: a URL, or
    /// `client-session` for a BuildKit session's FileSync (`remote`).
    pub fn remote(mut self, remote: impl Into<String>) -> Self {
        self.remote = Some(remote.into());
        self
    }

    /// Suppress verbose output (`q`).
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Do not use the build cache (`nocache`).
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }

    /// Adds an image to use as a cache source (`cachefrom`).
    pub fn cache_from(mut self, reference: impl Into<String>) -> Self {
        self.cache_from.push(reference.into());
        self
    }

    /// Always try to pull newer base images (`pull`).
    pub fn pull(mut self, pull: bool) -> Self {
        self.pull = pull;
        self
    }

    /// Remove intermediate containers after a successful build (`rm`, default on).
    pub fn rm(mut self, rm: bool) -> Self {
        self.rm = Some(rm);
        self
    }

    /// Always remove intermediate containers (`forcerm`).
    pub fn force_rm(mut self, force_rm: bool) -> Self {
        self.force_rm = force_rm;
        self
    }

    /// Sets a build argument (`buildargs`).
    pub fn build_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(name.into(), value.into());
        self
    }

    /// Sets a label on the result (`labels`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Network mode for `RUN` (`networkmode`: `host`, `none`, ...).
    pub fn network_mode(mut self, mode: impl Into<String>) -> Self {
        self.network_mode = Some(mode.into());
        self
    }

    /// Target platform (`platform`, `linux/amd64`).
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// The stage to build (`target`).
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Adds a BuildKit output (`outputs`); the daemon accepts one.
    pub fn output(mut self, output: BuildOutput) -> Self {
        self.outputs.push(output);
        self
    }

    /// Which builder to use (`version`).
    pub fn version(mut self, version: BuilderVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// The BuildKit session id (`session`), from an open `/session` upgrade.
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// An id to cancel the build with `POST /build/cancel` (`buildid`).
    pub fn build_id(mut self, id: impl Into<String>) -> Self {
        self.build_id = Some(id.into());
        self
    }

    /// Size of `/dev/shm` in bytes (`shmsize`).
    pub fn shm_size(mut self, bytes: u64) -> Self {
        self.shm_size = Some(bytes);
        self
    }

    /// Adds a `host:ip` entry to `/etc/hosts` in `RUN` containers (`extrahosts`).
    pub fn extra_host(mut self, host_ip: impl Into<String>) -> Self {
        self.extra_hosts.push(host_ip.into());
        self
    }

    /// Credentials for a registry the build pulls from (`X-Registry-Config`; the
    /// classic builder uses them, BuildKit asks its session instead).
    pub fn registry_auth(mut self, registry: impl Into<String>, auth: RegistryAuth) -> Self {
        self.registry_config.insert(registry.into(), auth);
        self
    }

    fn query(&self) -> Query {
        let mut q = Query::new();
        q.opt("dockerfile", self.dockerfile.as_deref());
        for t in &self.tags {
            q.push("t", t);
        }
        q.opt("remote", self.remote.as_deref())
            .flag("q", self.quiet)
            .flag("nocache", self.no_cache)
            .json("cachefrom", &self.cache_from)
            .flag("pull", self.pull)
            .opt("rm", self.rm.map(|r| if r { "1" } else { "0" }))
            .flag("forcerm", self.force_rm)
            .json("buildargs", &self.build_args)
            .json("labels", &self.labels)
            .opt("networkmode", self.network_mode.as_deref())
            .opt("platform", self.platform.as_deref())
            .opt("target", self.target.as_deref())
            .json("outputs", &self.outputs)
            .opt(
                "version",
                self.version.map(|v| match v {
                    BuilderVersion::Classic => "1",
                    BuilderVersion::BuildKit => "2",
                }),
            )
            .opt("session", self.session.as_deref())
            .opt("buildid", self.build_id.as_deref())
            .opt("shmsize", self.shm_size.map(|s| s.to_string()));
        for h in &self.extra_hosts {
            q.push("extrahosts", h);
        }
        q
    }
}

/// Options for [`Images::pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    reference: String,
    platform: Option<String>,
    auth: RegistryAuth,
}

impl PullOptions {
    /// Pull `reference` (`repo`, `repo:tag` or `repo@sha256:...`; `latest` when no
    /// tag is given), anonymously.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            platform: None,
            auth: RegistryAuth::anonymous(),
        }
    }

    /// The platform to pull (`linux/arm64`).
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// Credentials for the registry.
    pub fn auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = auth;
        self
    }
}

/// Options for [`Images::list`].
#[derive(Debug, Clone, Default)]
pub struct ListImagesOptions {
    all: bool,
    digests: bool,
    filters: Filters,
}

impl ListImagesOptions {
    /// Top-level images, no filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Include intermediate images (`all`).
    pub fn all(mut self, all: bool) -> Self {
        self.all = all;
        self
    }

    /// Include digest information (`digests`).
    pub fn digests(mut self, digests: bool) -> Self {
        self.digests = digests;
        self
    }

    /// Filters (`reference`, `label`, `dangling`, `before`, `since`).
    pub fn filters(mut self, filters: Filters) -> Self {
        self.filters = filters;
        self
    }
}

/// Options for [`Images::remove`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveImageOptions {
    force: bool,
    no_prune: bool,
}

impl RemoveImageOptions {
    /// Plain removal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove even if containers use it or it has several tags (`force`).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Keep untagged parents (`noprune`).
    pub fn no_prune(mut self, no_prune: bool) -> Self {
        self.no_prune = no_prune;
        self
    }
}

/// Options for [`Images::prune_build_cache`].
#[derive(Debug, Clone, Default)]
pub struct BuildCachePruneOptions {
    all: bool,
    keep_storage: Option<u64>,
    filters: Filters,
}

impl BuildCachePruneOptions {
    /// Remove unused, unshared cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove all unused cache, not only dangling (`all`).
    pub fn all(mut self, all: bool) -> Self {
        self.all = all;
        self
    }

    /// Keep this many bytes of cache (`keep-storage`).
    pub fn keep_storage(mut self, bytes: u64) -> Self {
        self.keep_storage = Some(bytes);
        self
    }

    /// Filters (`until`, `id`, `type`, ...).
    pub fn filters(mut self, filters: Filters) -> Self {
        self.filters = filters;
        self
    }
}

/// The answer to `POST /build/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct BuildCachePruned {
    /// Ids of the removed records.
    #[serde(default, deserialize_with = "nullable")]
    pub caches_deleted: Vec<String>,
    /// Bytes freed.
    #[serde(default)]
    pub space_reclaimed: u64,
}

/// The aux payload of a classic build's result: `{"ID": "sha256:..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BuildAux {
    /// The built image's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// The aux payload at the end of a push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct PushAux {
    /// The tag pushed.
    #[serde(default)]
    pub tag: String,
    /// The manifest digest (`sha256:...`).
    pub digest: String,
    /// The manifest size in bytes.
    #[serde(default)]
    pub size: u64,
}

/// One entry of `GET /images/json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ImageSummary {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Parent id, if any.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub repo_tags: Vec<String>,
    /// Digests (`repo@sha256:...`).
    #[serde(default, deserialize_with = "nullable")]
    pub repo_digests: Vec<String>,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// Bytes.
    #[serde(default)]
    pub size: Option<i64>,
    /// Bytes shared with other images (-1 when not computed).
    #[serde(default)]
    pub shared_size: Option<i64>,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Containers using it (-1 when not computed).
    #[serde(default)]
    pub containers: Option<i64>,
}

/// The answer to `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ImageInspect {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub repo_tags: Vec<String>,
    /// Digests (`repo@sha256:...`) of pushed or pulled manifests.
    #[serde(default, deserialize_with = "nullable")]
    pub repo_digests: Vec<String>,
    /// Parent id.
    #[serde(default)]
    pub parent: Option<String>,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// Architecture (`amd64`).
    #[serde(default)]
    pub architecture: Option<String>,
    /// Architecture variant (`v8`).
    #[serde(default)]
    pub variant: Option<String>,
    /// Operating system.
    #[serde(default)]
    pub os: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub size: Option<i64>,
    /// The image's run configuration.
    #[serde(default)]
    pub config: Option<ImageConfig>,
    /// Its layers.
    #[serde(default, rename = "RootFS")]
    pub root_fs: Option<RootFs>,
}

/// The run configuration stored in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ImageConfig {
    /// Default command.
    #[serde(default, deserialize_with = "nullable")]
    pub cmd: Vec<String>,
    /// Entrypoint.
    #[serde(default, deserialize_with = "nullable")]
    pub entrypoint: Vec<String>,
    /// Environment, `KEY=value`.
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User.
    #[serde(default)]
    pub user: Option<String>,
}

/// An image's layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct RootFs {
    /// `layers`.
    #[serde(default)]
    pub r#type: String,
    /// Layer diff ids.
    #[serde(default, deserialize_with = "nullable")]
    pub layers: Vec<String>,
}

/// One entry of the answer to `DELETE /images/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ImageDeleted {
    /// A reference that was untagged.
    #[serde(default)]
    pub untagged: Option<String>,
    /// An image id that was deleted.
    #[serde(default)]
    pub deleted: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_query_has_every_option() {
        let q = BuildOptions::new()
            .dockerfile("sub/Dockerfile")
            .tag("a:1")
            .tag("b:2")
            .build_arg("A", "1")
            .label("l", "v")
            .network_mode("host")
            .platform("linux/amd64")
            .target("final")
            .pull(true)
            .no_cache(true)
            .remote("client-session")
            .session("sid")
            .version(BuilderVersion::BuildKit)
            .output(BuildOutput {
                r#type: "local".into(),
                attrs: [("dest".to_string(), "/out".to_string())].into(),
            })
            .query();
        let q = percent_encoding::percent_decode_str(q.as_str())
            .decode_utf8()
            .unwrap()
            .into_owned();
        for want in [
            "dockerfile=sub/Dockerfile",
            "t=a:1&t=b:2",
            r#"buildargs={"A":"1"}"#,
            r#"labels={"l":"v"}"#,
            "networkmode=host",
            "platform=linux/amd64",
            "target=final",
            "pull=1",
            "nocache=1",
            "remote=client-session",
            "session=sid",
            "version=2",
            r#"outputs=[{"Type":"local","Attrs":{"dest":"/out"}}]"#,
        ] {
            assert!(q.contains(want), "{want} missing from {q}");
        }
    }
}
