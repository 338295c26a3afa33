//! The `docker-container` driver: a buildkitd in a container started through Docker,
//! reached with `buildctl dial-stdio` over `docker exec`.

use std::time::{Duration, Instant};

use docker_api::containers::{LogsOptions, RemoveContainerOptions, WaitCondition};
use docker_api::exec::ExecStartOptions;
use docker_api::{ContainerConfig, Docker, ExecConfig, PullOptions};
use futures_util::StreamExt;
use tonic::transport::Channel;

use crate::driver::{BoxFuture, Driver, channel_with};
use crate::error::{Error, Result};

/// The image used unless another is configured (pinned to the BuildKit release the
/// protocol follows).
pub const DEFAULT_IMAGE: &str = "moby/buildkit:v0.34.2";

/// The container name used unless another is configured.
pub const DEFAULT_NAME: &str = "buildkit-rs-buildkitd";

/// Where buildkitd keeps its state inside the container.
const STATE_DIR: &str = "/var/lib/buildkit";

/// What happens to the container when the driver is shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Leave it running for the next build (the default).
    #[default]
    Keep,
    /// Stop it (its state volume stays).
    Stop,
    /// Remove it (and its state volume).
    Remove,
}

/// Settings for [`DockerContainer`]; finish with [`DockerContainerBuilder::bootstrap`].
#[derive(Debug, Clone)]
pub struct DockerContainerBuilder {
    docker: Docker,
    image: String,
    name: String,
    env: Vec<(String, String)>,
    privileged: bool,
    host_network: bool,
    state_volume: Option<String>,
    state_volume_explicit: bool,
    lifecycle: Lifecycle,
    flags: Vec<String>,
    cap_add: Vec<String>,
    cap_drop: Vec<String>,
    security_opts: Vec<String>,
    binds: Vec<String>,
    ready_timeout: Duration,
}

impl DockerContainerBuilder {
    /// The image to run (default [`DEFAULT_IMAGE`]; pulled if the daemon lacks it).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// The container's name (default [`DEFAULT_NAME`]); a running container of this
    /// name is reused.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        if !self.state_volume_explicit {
            self.state_volume = Some(format!("{}_state", self.name));
        }
        self
    }

    /// An environment variable for buildkitd.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run privileged (default true, as buildx does). Without it, give buildkitd what
    /// it needs with [`cap_add`](Self::cap_add), [`security_opt`](Self::security_opt)
    /// and [`bind`](Self::bind) (see the README).
    pub fn privileged(mut self, on: bool) -> Self {
        self.privileged = on;
        self
    }

    /// Use the host's network (default true); also allows `network.host` builds.
    pub fn host_network(mut self, on: bool) -> Self {
        self.host_network = on;
        self
    }

    /// The volume holding buildkitd's state (default `<name>_state`); `None` keeps the
    /// state in the container.
    pub fn state_volume(mut self, volume: Option<String>) -> Self {
        self.state_volume = volume;
        self.state_volume_explicit = true;
        self
    }

    /// What [`DockerContainer::shutdown`] does.
    pub fn lifecycle(mut self, lifecycle: Lifecycle) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    /// An extra buildkitd flag (`--debug`, `--oci-worker-net=host`, ...).
    pub fn buildkitd_flag(mut self, flag: impl Into<String>) -> Self {
        self.flags.push(flag.into());
        self
    }

    /// Adds a capability (for unprivileged containers).
    pub fn cap_add(mut self, cap: impl Into<String>) -> Self {
        self.cap_add.push(cap.into());
        self
    }

    /// Drops a capability.
    pub fn cap_drop(mut self, cap: impl Into<String>) -> Self {
        self.cap_drop.push(cap.into());
        self
    }

    /// A security option (`seccomp=unconfined`, `apparmor=unconfined`).
    pub fn security_opt(mut self, opt: impl Into<String>) -> Self {
        self.security_opts.push(opt.into());
        self
    }

    /// An extra bind mount (`/host/path:/container/path[:ro]`).
    pub fn bind(mut self, bind: impl Into<String>) -> Self {
        self.binds.push(bind.into());
        self
    }

    /// How long to wait for buildkitd to answer (default 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Connect {
            driver: format!("docker-container ({})", self.name),
            message: message.into(),
        }
    }

    /// Reuses the running container of this name, starts it if it is stopped, or
    /// creates it; then waits until buildkitd answers.
    pub async fn bootstrap(self) -> Result<DockerContainer> {
        let containers = self.docker.containers();
        // Another client may be bootstrapping the same name at the same time: a
        // conflict or a container that vanished between calls means look again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = match containers.inspect(&self.name).await {
                Ok(c) if c.state.as_ref().is_some_and(|s| s.running) => Ok(()),
                Ok(_) => containers.start(&self.name).await.map_err(Error::from),
                Err(e) if e.is_not_found() => self.create().await,
                Err(e) => Err(e.into()),
            };
            match res {
                Ok(()) => break,
                Err(Error::Docker(e)) if attempt < 10 && matches!(e.status(), Some(404 | 409)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.wait_ready().await?;
        Ok(DockerContainer {
            docker: self.docker,
            name: self.name,
            lifecycle: self.lifecycle,
            state_volume: self.state_volume,
        })
    }

    async fn create(&self) -> Result<()> {
        let images = self.docker.images();
        if let Err(e) = images.inspect(&self.image).await {
            if !e.is_not_found() {
                return Err(e.into());
            }
            images
                .pull(&PullOptions::new(&self.image))
                .await?
                .finish()
                .await
                .map_err(|e| self.err(format!("pulling {}: {e}", self.image)))?;
        }
        let mut flags = Vec::new();
        if self.host_network {
            flags.push("--allow-insecure-entitlement=network.host".to_string());
        }
        flags.extend(self.flags.iter().cloned());
        let mut config = ContainerConfig::new(&self.image)
            .name(&self.name)
            .cmd(flags)
            .privileged(self.privileged)
            .label("buildkit-rs.driver", "docker-container");
        if self.host_network {
            config = config.network_mode("host");
        }
        if let Some(v) = &self.state_volume {
            config = config.bind(format!("{v}:{STATE_DIR}"));
        }
        for (k, v) in &self.env {
            config = config.env(k, v);
        }
        for c in &self.cap_add {
            config = config.cap_add(c);
        }
        for c in &self.cap_drop {
            config = config.cap_drop(c);
        }
        for o in &self.security_opts {
            config = config.security_opt(o);
        }
        for b in &self.binds {
            config = config.bind(b);
        }
        let containers = self.docker.containers();
        containers.create(&config).await?;
        containers.start(&self.name).await?;
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let t = Instant::now();
        let exec = self.docker.exec();
        let probe = ExecConfig::new(["buildctl", "debug", "workers"]);
        loop {
            let last = match exec.run(&self.name, &probe).await {
                Ok(out) if out.exit_code == 0 => return Ok(()),
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            let running = self
                .docker
                .containers()
                .inspect(&self.name)
                .await
                .ok()
                .and_then(|c| c.state)
                .is_some_and(|s| s.running);
            if !running || t.elapsed() > self.ready_timeout {
                let logs = self.logs_tail().await;
                let why = if running {
                    format!(
                        "buildkitd did not answer within {}s",
                        self.ready_timeout.as_secs()
                    )
                } else {
                    "the container stopped".to_string()
                };
                return Err(self.err(format!(
                    "{why} (last probe: {last}); container logs:\n{logs}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The last lines the container wrote: errors (stderr) first, then stdout (where
    /// a usage text would drown them). Docker applies `tail` before it picks the
    /// stream, so each stream is read whole and cut here.
    async fn logs_tail(&self) -> String {
        let mut out = String::new();
        for (name, stdout, lines) in [("stderr", false, 20), ("stdout", true, 10)] {
            let text = self.logs(stdout, lines).await;
            if !text.is_empty() {
                out.push_str(&format!("--- {name}:\n{text}"));
            }
        }
        out
    }

    /// The last `lines` lines of one stream.
    async fn logs(&self, stdout: bool, lines: usize) -> String {
        let opts = LogsOptions::new().stdout(stdout).stderr(!stdout);
        let Ok(mut s) = self.docker.containers().logs(&self.name, &opts).await else {
            return String::new();
        };
        let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut partial = String::new();
        while let Some(Ok(piece)) = s.next().await {
            partial.push_str(&String::from_utf8_lossy(&piece.data));
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                last.push_back(line);
                if last.len() > lines {
                    last.pop_front();
                }
            }
        }
        if !partial.is_empty() {
            last.push_back(partial);
        }
        last.into_iter().collect()
    }
}

/// A buildkitd in a container, bootstrapped through Docker.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use buildkit_driver::{DockerContainer, Lifecycle};
/// let driver = DockerContainer::builder(docker_api::Docker::from_env()?)
///     .name("my-builder")
///     .lifecycle(Lifecycle::Stop)
///     .bootstrap()
///     .await?;
/// // ... driver.solve(build) ...
/// driver.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DockerContainer {
    docker: Docker,
    name: String,
    lifecycle: Lifecycle,
    state_volume: Option<String>,
}

impl DockerContainer {
    /// Starts configuring a driver on the daemon `docker` talks to.
    pub fn builder(docker: Docker) -> DockerContainerBuilder {
        DockerContainerBuilder {
            docker,
            image: DEFAULT_IMAGE.into(),
            name: DEFAULT_NAME.into(),
            env: Vec::new(),
            privileged: true,
            host_network: true,
            state_volume: None,
            state_volume_explicit: false,
            lifecycle: Lifecycle::Keep,
            flags: Vec::new(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opts: Vec::new(),
            binds: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
        .name(DEFAULT_NAME)
    }

    /// The container's name.
    pub fn container_name(&self) -> &str {
        &self.name
    }

    /// Applies the [`Lifecycle`]: leaves the container, stops it, or removes it and its
    /// state volume.
    pub async fn shutdown(self) -> Result<()> {
        let containers = self.docker.containers();
        match self.lifecycle {
            Lifecycle::Keep => {}
            Lifecycle::Stop => containers.stop(&self.name, Some(10)).await?,
            Lifecycle::Remove => {
                containers
                    .remove(&self.name, &RemoveContainerOptions::new().force(true))
                    .await?;
                let _ = containers.wait(&self.name, WaitCondition::Removed).await;
                if let Some(v) = &self.state_volume {
                    self.docker.volumes().remove(v, true).await?;
                }
            }
        }
        Ok(())
    }
}

impl Driver for DockerContainer {
    fn name(&self) -> &str {
        "docker-container"
    }

    fn channel(&self) -> BoxFuture<'_, Result<Channel>> {
        let docker = self.docker.clone();
        let name = self.name.clone();
        Box::pin(async move {
            channel_with("docker-container", move || {
                let docker = docker.clone();
                let name = name.clone();
                async move {
                    let exec = docker.exec();
                    let config = ExecConfig::new(["buildctl", "dial-stdio"])
                        .attach_stdin(true)
                        .attach_stdout(true)
                        .attach_stderr(true);
                    let id = exec
                        .create(&name, &config)
                        .await
                        .map_err(std::io::Error::other)?;
                    exec.start(&id, &ExecStartOptions::new())
                        .await
                        .map_err(std::io::Error::other)
                }
            })
            .await
        })
    }
}
