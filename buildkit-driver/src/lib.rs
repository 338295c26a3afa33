//! Reach any BuildKit, solve builds, watch them happen.
//!
//! A [`Driver`] is how to reach a daemon's Control API and attach a session:
//! [`Moby`] (dockerd's embedded BuildKit), [`DockerContainer`] (a buildkit container
//! started through Docker) or [`Remote`] (buildkitd over unix, TCP or mTLS). A
//! [`Build`] describes a Dockerfile build; [`Driver::solve`] runs it and returns a
//! [`BuildHandle`] with live [`progress`] and, awaited, the exporter response.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use buildkit_driver::{Build, Driver, Network, Remote, progress::Plain};
//!
//! let driver = Remote::from_env()?; // BUILDKIT_HOST
//! let build = Build::dockerfile("./app").build_arg("VERSION", "1").network(Network::Host);
//! let mut handle = driver.solve(build).await?;
//! let progress = handle.progress();
//! let printer = tokio::spawn(Plain::new(std::io::stderr()).print(progress));
//! let solved = handle.await?;
//! printer.await??;
//! println!("{:?}", solved.exporter_response);
//! # Ok(()) }
//! ```

mod container;
pub mod control;
mod driver;
mod error;
mod moby;
pub mod progress;
mod remote;
mod solve;

pub use container::{
    DEFAULT_IMAGE, DEFAULT_NAME, DockerContainer, DockerContainerBuilder, Lifecycle,
};
pub use driver::{BoxFuture, Capabilities, Driver, MAX_MESSAGE_SIZE, StoreKind, channel_with};
pub use error::{Error, Result, SolveError};
pub use moby::Moby;
pub use remote::{DEFAULT_ADDRESS, Remote};
pub use solve::{
    Build, BuildHandle, CacheBackend, CacheRole, DOCKERFILE_FRONTEND, ExporterResponse, Finish,
    NamedContext, Network, Output, OutputDone, Prepare, Progress, RawCache, RawOutput, Solved,
};
