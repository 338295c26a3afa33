//! A thin, streaming Docker Engine API client over hyper 1.
//!
//! It knows nothing of BuildKit: it connects (unix socket, TCP, TLS through rustls),
//! negotiates the API version, sends requests whose bodies may be any byte stream,
//! decodes streamed responses as they arrive, and takes over connections with HTTP
//! upgrades (the seam the BuildKit crates use for `/session` and `/grpc`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), docker_api::Error> {
//! let docker = docker_api::Docker::from_env()?; // DOCKER_HOST or /var/run/docker.sock
//! let ping = docker.ping().await?;
//! println!("API {:?}", ping.api_version);
//! # Ok(()) }
//! ```

mod body;
mod client;
mod error;
pub mod tls;
mod transport;

pub use body::{Body, JsonStream, JsonStreamError};
pub use client::{
    ApiVersion, Docker, DockerBuilder, MAX_API_VERSION, MIN_API_VERSION, Ping, Query, Upgraded,
};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use transport::{DEFAULT_SOCKET, Endpoint};

pub use http;
