//! The `moby` driver: dockerd's embedded BuildKit, through the Engine API's `/grpc`
//! and `/session` upgrades.

use buildkit_session::{Session, SessionHandle};
use docker_api::Docker;
use tonic::transport::Channel;

use crate::driver::{BoxFuture, Capabilities, Driver, StoreKind, channel_with};
use crate::error::{Error, Result};

/// dockerd's embedded BuildKit.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use buildkit_driver::{Driver, Moby};
/// let driver = Moby::new(docker_api::Docker::from_env()?);
/// let caps = driver.capabilities().await?;
/// println!("exporters: {:?}", caps.exporters);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Moby {
    docker: Docker,
}

impl Moby {
    /// The BuildKit of the daemon `docker` talks to.
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

impl Driver for Moby {
    fn name(&self) -> &str {
        "moby"
    }

    fn channel(&self) -> BoxFuture<'_, Result<Channel>> {
        let docker = self.docker.clone();
        Box::pin(async move {
            // Check reachability first for a clear error (the channel connects lazily
            // inside tonic and would report a generic transport error).
            docker.ping().await.map_err(|e| Error::Connect {
                driver: "moby".into(),
                message: e.to_string(),
            })?;
            channel_with("moby", move || {
                let docker = docker.clone();
                async move {
                    docker
                        .upgrade("/grpc", "h2c", [], docker_api::Body::empty())
                        .await
                        .map_err(std::io::Error::other)
                }
            })
            .await
        })
    }

    fn attach(&self, session: Session) -> BoxFuture<'_, Result<SessionHandle>> {
        Box::pin(async move { Ok(session.run_on_docker(&self.docker).await?) })
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities>> {
        Box::pin(async move {
            let mut control = self.control().await?;
            Capabilities::probe("moby", &mut control, StoreKind::Graphdriver).await
        })
    }
}
