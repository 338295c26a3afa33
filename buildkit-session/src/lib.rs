//! The client side of a BuildKit session: the services the daemon calls back into
//! during a build, served over any byte stream.
//!
//! A [`Session`] is an id, a shared key and a set of [`Attachable`] services; health
//! checking is always served. The services:
//!
//! | attachable | gRPC service | what the daemon gets |
//! |---|---|---|
//! | [`Auth`] | `moby.filesync.v1.Auth` | registry credentials and tokens |
//! | [`Secrets`] | `moby.buildkit.secrets.v1.Secrets` | `RUN --mount=type=secret` values |
//! | [`SshForward`] | `moby.sshforward.v1.SSH` | ssh-agent connections |
//! | [`FileSync`] | `moby.filesync.v1.FileSync` | local directories (contexts) |
//! | [`FileSend`] | `moby.filesync.v1.FileSend` | where exporter output goes |
//! | [`Upload`] | `moby.upload.v1.Upload` | byte streams such as a tarball context |
//! | [`ContentStore`] | `containerd.services.content.v1.Content` | local cache directories |
//!
//! Attach a session to dockerd with [`Session::run_on_docker`] (the `/session`
//! upgrade) or to any Control API with [`tunnel::run_on_control`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use buildkit_session::{Auth, FileSync, Secrets, Session};
//!
//! let docker = docker_api::Docker::from_env()?;
//! let session = Session::new()
//!     .attach(Auth::from_docker_config())
//!     .attach(Secrets::new().file("token", "./token.txt"))
//!     .attach(FileSync::new().dir("context", "./app").dir("dockerfile", "./app"));
//! let id = session.id().to_string();
//! let handle = session.run_on_docker(&docker).await?;
//! // ... POST /build?version=2&session=<id>&remote=client-session ...
//! handle.close().await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod content;
pub mod context;
mod error;
pub mod filesend;
pub mod filesync;
pub mod fsutil;
mod health;
mod metadata;
mod router;
pub mod secrets;
mod session;
pub mod ssh;
pub mod tunnel;
pub mod upload;

pub use auth::{Auth, Credentials};
pub use content::ContentStore;
pub use error::{Error, Result};
pub use filesend::{Delivered, FileSend, FileSendTarget, Transfer};
pub use filesync::FileSync;
pub use health::Health;
pub use router::{Attachable, Router, service_methods};
pub use secrets::Secrets;
pub use session::{
    HEADER_SESSION_ID, HEADER_SESSION_METHOD, HEADER_SESSION_SHARED_KEY, Session, SessionHandle,
    new_id, shared_key_for,
};
pub use ssh::SshForward;
pub use upload::Upload;
