//! Container endpoints: create, start, stop, kill, wait, remove, inspect, list and
//! logs.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result};
use crate::mux::{Output, OutputStream};
use crate::util::{Filters, nullable, path};
use crate::{Body, Docker, Query};

/// Container endpoints; see [`Docker::containers`].
#[derive(Debug, Clone, Copy)]
pub struct Containers<'a> {
    docker: &'a Docker,
}

impl<'a> Containers<'a> {
    pub(crate) fn new(docker: &'a Docker) -> Self {
        Self { docker }
    }

    /// `POST /containers/create`.
    pub async fn create(&self, config: &ContainerConfig) -> Result<ContainerCreated> {
        let mut q = Query::new();
        q.opt("name", config.name.as_deref())
            .opt("platform", config.platform.as_deref());
        let body = Body::json(config).map_err(|e| {
            self.docker
                .err(ErrorKind::Config(format!("container config: {e}")))
        })?;
        self.docker
            .json(
                Method::POST,
                &format!("/containers/create{}", q.as_str()),
                Some(body),
            )
            .await
    }

    /// `POST /containers/{id}/start`. Starting a running container is not an error.
    pub async fn start(&self, id: &str) -> Result<()> {
        let r = self
            .docker
            .call(
                Method::POST,
                &format!("/containers/{}/start", path(id)),
                None,
            )
            .await;
        not_modified_is_ok(r)
    }

    /// `POST /containers/{id}/stop`: SIGTERM, then SIGKILL after `timeout_secs`
    /// (the container's default when `None`). Stopping a stopped container is not an
    /// error.
    pub async fn stop(&self, id: &str, timeout_secs: Option<u32>) -> Result<()> {
        let mut q = Query::new();
        q.opt("t", timeout_secs.map(|t| t.to_string()));
        let r = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/containers/{}/stop{}", path(id), q.as_str()),
                HeaderMap::new(),
                Body::empty(),
            )
            .await
            .map(drop);
        not_modified_is_ok(r)
    }

    /// `POST /containers/{id}/kill` with a signal (`SIGKILL` when `None`).
    pub async fn kill(&self, id: &str, signal: Option<&str>) -> Result<()> {
        let mut q = Query::new();
        q.opt("signal", signal);
        self.docker
            .call(
                Method::POST,
                &format!("/containers/{}/kill{}", path(id), q.as_str()),
                None,
            )
            .await
    }

    /// `POST /containers/{id}/wait`: waits until the container stops (no time
    /// limit) and returns its exit code.
    pub async fn wait(&self, id: &str, condition: WaitCondition) -> Result<ContainerExit> {
        let cond = match condition {
            WaitCondition::NotRunning => "not-running",
            WaitCondition::NextExit => "next-exit",
            WaitCondition::Removed => "removed",
        };
        let resp = self
            .docker
            .request_unbounded(
                Method::POST,
                &format!("/containers/{}/wait?condition={cond}", path(id)),
                HeaderMap::new(),
                Body::empty(),
            )
            .await?;
        let exit: ContainerExit = self.docker.read_json(resp).await?;
        if let Some(msg) = exit.error.as_ref().map(|e| &e.message)
            && !msg.is_empty()
        {
            return Err(self.docker.err(ErrorKind::Stream(msg.clone())));
        }
        Ok(exit)
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove(&self, id: &str, options: &RemoveContainerOptions) -> Result<()> {
        let mut q = Query::new();
        q.flag("force", options.force).flag("v", options.volumes);
        self.docker
            .call(
                Method::DELETE,
                &format!("/containers/{}{}", path(id), q.as_str()),
                None,
            )
            .await
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInspect> {
        self.docker
            .json(Method::GET, &format!("/containers/{}/json", path(id)), None)
            .await
    }

    /// `GET /containers/json`: running containers, or all with `all`, that match
    /// `filters` (`label`, `name`, `status`, ...).
    pub async fn list(&self, all: bool, filters: &Filters) -> Result<Vec<ContainerSummary>> {
        let mut q = Query::new();
        q.flag("all", all).json("filters", filters);
        self.docker
            .json(
                Method::GET,
                &format!("/containers/json{}", q.as_str()),
                None,
            )
            .await
    }

    /// `GET /containers/{id}/logs`: the container's output, demultiplexed into
    /// stdout and stderr pieces (a TTY container's output is all stdout). With
    /// [`LogsOptions::follow`] the stream goes on until the container stops.
    pub async fn logs(
        &self,
        id: &str,
        options: &LogsOptions,
    ) -> Result<BoxStream<'static, Result<Output>>> {
        // Engines before API 1.42 do not say whether the stream is multiplexed: the
        // container's TTY setting decides.
        let tty = self.inspect(id).await?.config.is_some_and(|c| c.tty);
        let mut q = Query::new();
        q.flag("follow", options.follow)
            .flag("stdout", options.stdout)
            .flag("stderr", options.stderr)
            .flag("timestamps", options.timestamps)
            .opt("since", options.since.as_deref())
            .opt("until", options.until.as_deref())
            .opt("tail", options.tail.as_deref());
        let resp = self
            .docker
            .request(
                Method::GET,
                &format!("/containers/{}/logs{}", path(id), q.as_str()),
                HeaderMap::new(),
                Body::empty(),
            )
            .await?;
        let bytes = self.docker.byte_stream(resp);
        Ok(OutputStream::new(bytes, !tty, self.docker.endpoint().to_string()).boxed())
    }
}

fn not_modified_is_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.status() == Some(304) => Ok(()),
        other => other,
    }
}

/// What [`Containers::wait`] waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// The container is not running (returns at once if it already stopped).
    #[default]
    NotRunning,
    /// The next time it exits.
    NextExit,
    /// It has been removed (for auto-remove containers).
    Removed,
}

/// Options for [`Containers::logs`].
#[derive(Debug, Clone)]
pub struct LogsOptions {
    follow: bool,
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    since: Option<String>,
    until: Option<String>,
    tail: Option<String>,
}

impl Default for LogsOptions {
    fn default() -> Self {
        Self {
            follow: false,
            stdout: true,
            stderr: true,
            timestamps: false,
            since: None,
            until: None,
            tail: None,
        }
    }
}

impl LogsOptions {
    /// Both stdout and stderr, everything so far, no follow.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep streaming new output until the container stops.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Include stdout (default on).
    pub fn stdout(mut self, stdout: bool) -> Self {
        self.stdout = stdout;
        self
    }

    /// Include stderr (default on).
    pub fn stderr(mut self, stderr: bool) -> Self {
        self.stderr = stderr;
        self
    }

    /// Prefix each line with its RFC 3339 timestamp.
    pub fn timestamps(mut self, timestamps: bool) -> Self {
        self.timestamps = timestamps;
        self
    }

    /// Only output since this time (unix seconds or RFC 3339).
    pub fn since(mut self, since: impl Into<String>) -> Self {
        self.since = Some(since.into());
        self
    }

    /// Only output before this time.
    pub fn until(mut self, until: impl Into<String>) -> Self {
        self.until = Some(until.into());
        self
    }

    /// Only the last `n` lines.
    pub fn tail(mut self, n: usize) -> Self {
        self.tail = Some(n.to_string());
        self
    }
}

/// Options for [`Containers::remove`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveContainerOptions {
    force: bool,
    volumes: bool,
}

impl RemoveContainerOptions {
    /// Plain removal of a stopped container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kill it first if it runs (`force`).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Also remove its anonymous volumes (`v`).
    pub fn volumes(mut self, volumes: bool) -> Self {
        self.volumes = volumes;
        self
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Empty {}

/// The configuration of a new container, for [`Containers::create`].
///
/// ```
/// use docker_api::ContainerConfig;
/// let config = ContainerConfig::new("busybox:local")
///     .name("worker-1")
///     .cmd(["sh", "-c", "echo hello"])
///     .env("MODE", "test")
///     .label("app", "demo")
///     .network_mode("none")
///     .auto_remove(false);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(skip)]
    name: Option<String>,
    #[serde(skip)]
    platform: Option<String>,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<String, Empty>,
    host_config: HostConfig,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HostConfig {
    privileged: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    binds: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_mode: Option<String>,
    auto_remove: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    init: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cap_drop: Vec<String>,
}

impl ContainerConfig {
    /// A container of `image` with the image's defaults.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            ..Self::default()
        }
    }

    /// The container's name (otherwise the daemon picks one).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The platform of the image to use (`linux/arm64`).
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// The command (replaces the image's `CMD`).
    pub fn cmd<I, S>(mut self, cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }

    /// The entrypoint (replaces the image's `ENTRYPOINT`; empty clears it).
    pub fn entrypoint<I, S>(mut self, entrypoint: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(entrypoint.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.env
            .push(format!("{}={}", key.as_ref(), value.as_ref()));
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The user (`name`, `uid`, `uid:gid`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The host name inside the container.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Allocate a TTY (output is then raw, not multiplexed).
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        self
    }

    /// Keep stdin open (`OpenStdin`, `AttachStdin`), closing it after the first
    /// attached client detaches when `once`.
    pub fn open_stdin(mut self, open: bool, once: bool) -> Self {
        self.open_stdin = open;
        self.attach_stdin = open;
        self.stdin_once = open && once;
        self
    }

    /// Run privileged.
    pub fn privileged(mut self, privileged: bool) -> Self {
        self.host_config.privileged = privileged;
        self
    }

    /// Adds a bind mount or named volume: `host-path:container-path[:ro]` or
    /// `volume-name:container-path`.
    pub fn bind(mut self, bind: impl Into<String>) -> Self {
        self.host_config.binds.push(bind.into());
        self
    }

    /// Adds an anonymous volume at `container_path`.
    pub fn volume(mut self, container_path: impl Into<String>) -> Self {
        self.volumes.insert(container_path.into(), Empty {});
        self
    }

    /// The network mode (`none`, `host`, `bridge`, `container:<id>`, a network
    /// name).
    pub fn network_mode(mut self, mode: impl Into<String>) -> Self {
        self.host_config.network_mode = Some(mode.into());
        self
    }

    /// Remove the container when it exits.
    pub fn auto_remove(mut self, auto_remove: bool) -> Self {
        self.host_config.auto_remove = auto_remove;
        self
    }

    /// Run an init process as PID 1.
    pub fn init(mut self, init: bool) -> Self {
        self.host_config.init = Some(init);
        self
    }

    /// Adds a security option (`seccomp=unconfined`, `apparmor=unconfined`).
    pub fn security_opt(mut self, opt: impl Into<String>) -> Self {
        self.host_config.security_opt.push(opt.into());
        self
    }

    /// Adds a kernel capability (`SYS_ADMIN`, or `ALL`).
    pub fn cap_add(mut self, cap: impl Into<String>) -> Self {
        self.host_config.cap_add.push(cap.into());
        self
    }

    /// Drops a kernel capability (`NET_RAW`, ...).
    pub fn cap_drop(mut self, cap: impl Into<String>) -> Self {
        self.host_config.cap_drop.push(cap.into());
        self
    }
}

/// The answer to [`Containers::create`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerCreated {
    /// The new container's id.
    pub id: String,
    /// Warnings from the daemon.
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}

/// The answer to [`Containers::wait`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerExit {
    /// The exit code.
    pub status_code: i64,
    /// An error while waiting, if any.
    #[serde(default)]
    pub error: Option<WaitError>,
}

/// An error reported by [`Containers::wait`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct WaitError {
    /// The message.
    #[serde(default)]
    pub message: String,
}

/// One entry of [`Containers::list`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerSummary {
    /// Container id.
    pub id: String,
    /// Names, each with a leading `/`.
    #[serde(default, deserialize_with = "nullable")]
    pub names: Vec<String>,
    /// The image as given at creation.
    #[serde(default)]
    pub image: Option<String>,
    /// The image id.
    #[serde(default, rename = "ImageID")]
    pub image_id: Option<String>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// `created`, `running`, `exited`, ...
    #[serde(default)]
    pub state: Option<String>,
    /// Human-readable status (`Up 2 minutes`).
    #[serde(default)]
    pub status: Option<String>,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// The answer to [`Containers::inspect`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerInspect {
    /// Container id.
    pub id: String,
    /// Name, with a leading `/`.
    #[serde(default)]
    pub name: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// The image id.
    #[serde(default)]
    pub image: Option<String>,
    /// Run state.
    #[serde(default)]
    pub state: Option<ContainerState>,
    /// The configuration it was created with.
    #[serde(default)]
    pub config: Option<InspectConfig>,
    /// Host-side settings.
    #[serde(default)]
    pub host_config: Option<InspectHostConfig>,
    /// Mounts.
    #[serde(default, deserialize_with = "nullable")]
    pub mounts: Vec<MountPoint>,
}

/// A container's run state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    #[serde(default)]
    pub status: String,
    /// Whether it runs.
    #[serde(default)]
    pub running: bool,
    /// Whether it was killed for lack of memory.
    #[serde(default, rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Main process id (0 when not running).
    #[serde(default)]
    pub pid: i64,
    /// Last exit code.
    #[serde(default)]
    pub exit_code: i64,
    /// Last error.
    #[serde(default)]
    pub error: String,
    /// Start time.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Finish time.
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// The configuration part of [`ContainerInspect`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct InspectConfig {
    /// Image as given.
    #[serde(default)]
    pub image: String,
    /// Command.
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
    /// User.
    #[serde(default)]
    pub user: String,
    /// Working directory.
    #[serde(default)]
    pub working_dir: String,
    /// Whether it has a TTY.
    #[serde(default)]
    pub tty: bool,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// The host configuration part of [`ContainerInspect`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct InspectHostConfig {
    /// Network mode.
    #[serde(default)]
    pub network_mode: String,
    /// Whether it is privileged.
    #[serde(default)]
    pub privileged: bool,
    /// Binds.
    #[serde(default, deserialize_with = "nullable")]
    pub binds: Vec<String>,
    /// Whether it is removed on exit.
    #[serde(default)]
    pub auto_remove: bool,
}

/// A mount of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct MountPoint {
    /// `bind`, `volume`, `tmpfs`.
    #[serde(default)]
    pub r#type: String,
    /// Volume name, for volumes.
    #[serde(default)]
    pub name: Option<String>,
    /// Host-side source.
    #[serde(default)]
    pub source: String,
    /// Path in the container.
    #[serde(default)]
    pub destination: String,
    /// Whether it is writable.
    #[serde(default, rename = "RW")]
    pub rw: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serialises_as_the_engine_expects() {
        let c = ContainerConfig::new("img")
            .name("n")
            .cmd(["sh", "-c", "true"])
            .env("A", "1")
            .label("l", "v")
            .privileged(true)
            .bind("/h:/c:ro")
            .volume("/data")
            .network_mode("none")
            .auto_remove(true)
            .user("1:2")
            .working_dir("/w");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["Image"], "img");
        assert_eq!(v["Cmd"], serde_json::json!(["sh", "-c", "true"]));
        assert_eq!(v["Env"], serde_json::json!(["A=1"]));
        assert_eq!(v["Labels"]["l"], "v");
        assert_eq!(v["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(v["User"], "1:2");
        assert_eq!(v["WorkingDir"], "/w");
        let h = &v["HostConfig"];
        assert_eq!(h["Privileged"], true);
        assert_eq!(h["Binds"], serde_json::json!(["/h:/c:ro"]));
        assert_eq!(h["NetworkMode"], "none");
        assert_eq!(h["AutoRemove"], true);
        assert!(v.get("name").is_none() && v.get("Name").is_none());
        assert!(v.get("Entrypoint").is_none());
    }
}
