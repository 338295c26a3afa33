//! A thin, streaming Docker Engine API client over hyper 1.
//!
//! It knows nothing of BuildKit: it connects (unix socket, TCP, TLS through rustls),
//! negotiates the API version, sends requests whose bodies may be any byte stream,
//! decodes streamed responses as they arrive, and takes over connections with HTTP
//! upgrades (the seam the BuildKit crates use for `/session`, `/grpc` and exec).
//!
//! ```no_run
//! use docker_api::{ContainerConfig, Docker, ExecConfig};
//! use docker_api::containers::{LogsOptions, RemoveContainerOptions, WaitCondition};
//! use futures_util::TryStreamExt;
//!
//! # async fn demo() -> Result<(), docker_api::Error> {
//! let docker = Docker::from_env()?; // DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
//! println!("API {}", docker.api_version().await?);
//!
//! // Run a container and read its output.
//! let config = ContainerConfig::new("busybox").cmd(["sh", "-c", "echo hello"]);
//! let id = docker.containers().create(&config).await?.id;
//! docker.containers().start(&id).await?;
//! let exit = docker.containers().wait(&id, WaitCondition::NotRunning).await?;
//! let logs: Vec<_> = docker.containers().logs(&id, &LogsOptions::new()).await?.try_collect().await?;
//! assert_eq!(exit.status_code, 0);
//! assert_eq!(&logs[0].data[..], b"hello\n");
//! docker.containers().remove(&id, &RemoveContainerOptions::new()).await?;
//!
//! // Exec into a running container.
//! # let running = "c";
//! let out = docker.exec().run(running, &ExecConfig::new(["cat", "/etc/hostname"])).await?;
//! println!("{} (exit {})", String::from_utf8_lossy(&out.stdout), out.exit_code);
//! # Ok(()) }
//! ```

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

mod auth;
mod body;
mod client;
pub mod containers;
mod error;
pub mod exec;
pub mod images;
mod mux;
mod progress;
pub mod system;
pub mod tls;
mod transport;
mod util;
pub mod volumes;

pub use auth::RegistryAuth;
pub use body::{Body, JsonStream, JsonStreamError};
pub use client::{
    ApiVersion, Docker, DockerBuilder, MAX_API_VERSION, MIN_API_VERSION, Ping, Query, Upgraded,
};
pub use containers::ContainerConfig;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use exec::{ExecConfig, ExecIo, ExecOutput};
pub use images::{BuildOptions, PullOptions};
pub use mux::{Output, StreamKind};
pub use progress::{ProgressDetail, ProgressMessage, ProgressStream};
pub use transport::{DEFAULT_SOCKET, Endpoint, Stream, dial};
pub use util::Filters;
pub use volumes::VolumeOptions;

pub use http;

impl Docker {
    /// System endpoints: version, info, disk usage, events.
    pub fn system(&self) -> system::System<'_> {
        system::System::new(self)
    }

    /// Image endpoints: build, pull, push, load, save, ...
    pub fn images(&self) -> images::Images<'_> {
        images::Images::new(self)
    }

    /// Container endpoints: create, start, wait, logs, ...
    pub fn containers(&self) -> containers::Containers<'_> {
        containers::Containers::new(self)
    }

    /// Exec endpoints: run processes in running containers.
    pub fn exec(&self) -> exec::Exec<'_> {
        exec::Exec::new(self)
    }

    /// Volume endpoints.
    pub fn volumes(&self) -> volumes::Volumes<'_> {
        volumes::Volumes::new(self)
    }
}
