//! The [`Driver`] seam: how to reach a Control API and attach a session, and what the
//! daemon behind it can do.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use buildkit_proto::moby::buildkit::v1::types::WorkerRecord;
use buildkit_proto::moby::buildkit::v1::{InfoRequest, ListWorkersRequest};
use buildkit_session::{Session, SessionHandle};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::solve::{Build, BuildHandle};

/// A boxed future, as the object-safe [`Driver`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest gRPC message sent or accepted on the Control API (dockerd since 27.1.2
/// and buildkitd accept 16 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// How to reach one BuildKit daemon.
///
/// Implementations: [`crate::Moby`] (dockerd's embedded BuildKit),
/// [`crate::DockerContainer`] (a buildkit container started through Docker) and
/// [`crate::Remote`] (buildkitd over unix, TCP or mTLS). Implement it for another
/// transport (a Kubernetes pod, an SSH tunnel): provide [`Driver::channel`]; the rest
/// has working defaults.
pub trait Driver: Send + Sync {
    /// The driver's name for messages (`moby`, `docker-container`, `remote`).
    fn name(&self) -> &str;

    /// A gRPC channel to the daemon's Control API.
    fn channel(&self) -> BoxFuture<'_, Result<Channel>>;

    /// A Control API client on a new channel, with BuildKit's message limits.
    fn control(&self) -> BoxFuture<'_, Result<ControlClient<Channel>>> {
        Box::pin(async move {
            Ok(ControlClient::new(self.channel().await?)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE))
        })
    }

    /// Attaches `session` to the daemon and serves it until the returned handle is
    /// closed or dropped. The default uses the `Control.Session` tunnel.
    fn attach(&self, session: Session) -> BoxFuture<'_, Result<SessionHandle>> {
        Box::pin(async move {
            let mut control = self.control().await?;
            Ok(buildkit_session::tunnel::run_on_control(session, &mut control).await?)
        })
    }

    /// What the daemon can export and cache, from its workers and version.
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities>> {
        Box::pin(async move {
            let mut control = self.control().await?;
            Capabilities::probe(self.name(), &mut control, StoreKind::Content).await
        })
    }

    /// Solves `build`: checks it against [`Driver::capabilities`], attaches its session,
    /// starts the solve and returns a handle that yields progress and the result.
    /// Dropping the handle cancels the build on the daemon.
    fn solve(&self, build: Build) -> BoxFuture<'_, Result<BuildHandle>> {
        Box::pin(crate::solve::start(self, build))
    }
}

/// Where the daemon keeps images, which decides what it can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A content store (buildkitd, or dockerd with the containerd image store): every
    /// exporter and cache backend.
    Content,
    /// dockerd's classic graphdriver store: `moby`, `local` and `tar` exporters, inline
    /// cache only.
    Graphdriver,
}

/// What a daemon supports, as probed from `ListWorkers` and `Info`.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The driver that was probed.
    pub driver: String,
    /// BuildKit's version (`v0.34.2`), when the daemon reports it (`Info`, v0.11+).
    pub version: Option<String>,
    /// The workers.
    pub workers: Vec<WorkerRecord>,
    /// The image store kind.
    pub store: StoreKind,
    /// Exporter types (`image`, `moby`, `oci`, `docker`, `local`, `tar`).
    pub exporters: BTreeSet<String>,
    /// Cache export backends.
    pub cache_exports: BTreeSet<String>,
    /// Cache import backends.
    pub cache_imports: BTreeSet<String>,
    /// Whether one solve may have several exporters (BuildKit v0.13+).
    pub multiple_exporters: bool,
    /// Platforms the workers can build, `os/arch[/variant]`.
    pub platforms: Vec<String>,
    /// Whether the Dockerfile frontend takes named contexts (BuildKit v0.10+).
    pub named_contexts: bool,
    /// Whether the daemon makes attestations (BuildKit v0.11+).
    pub attestations: bool,
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Capabilities {
    /// Probes with `ListWorkers` and `Info` (an `Info` the daemon does not implement
    /// just means an older daemon).
    pub async fn probe(
        driver: &str,
        control: &mut ControlClient<Channel>,
        store_hint: StoreKind,
    ) -> Result<Self> {
        let workers = control
            .list_workers(ListWorkersRequest::default())
            .await
            .map_err(|s| Error::Connect {
                driver: driver.to_string(),
                message: format!("listing workers: {}", s.message()),
            })?
            .into_inner()
            .record;
        let version = match control.info(InfoRequest {}).await {
            Ok(info) => info
                .into_inner()
                .buildkit_version
                .map(|v| v.version)
                .filter(|v| !v.is_empty()),
            Err(_) => None,
        };
        Ok(Self::from_parts(driver, workers, version, store_hint))
    }

    /// Derives the capabilities from probed facts.
    pub fn from_parts(
        driver: &str,
        workers: Vec<WorkerRecord>,
        version: Option<String>,
        store_hint: StoreKind,
    ) -> Self {
        // dockerd's moby worker on the containerd store reports a snapshotter label.
        let store = match store_hint {
            StoreKind::Graphdriver
                if workers.iter().any(|w| {
                    w.labels
                        .contains_key("org.mobyproject.buildkit.worker.snapshotter")
                }) =>
            {
                StoreKind::Content
            }
            s => s,
        };
        let (exporters, cache_exports, cache_imports) = match store {
            StoreKind::Content => (
                set(&["image", "moby", "oci", "docker", "local", "tar"]),
                set(&["registry", "local", "inline", "gha", "s3", "azblob"]),
                set(&["registry", "local", "gha", "s3", "azblob"]),
            ),
            StoreKind::Graphdriver => (
                set(&["moby", "local", "tar"]),
                set(&["inline"]),
                set(&["registry"]),
            ),
        };
        let parsed = version.as_deref().and_then(parse_version);
        let multiple_exporters = parsed.is_some_and(|v| v >= (0, 13));
        let mut platforms: Vec<String> = workers
            .iter()
            .flat_map(|w| w.platforms.iter())
            .map(|p| {
                let mut s = format!("{}/{}", p.os, p.architecture);
                if !p.variant.is_empty() {
                    s.push('/');
                    s.push_str(&p.variant);
                }
                s
            })
            .collect();
        platforms.sort();
        platforms.dedup();
        let mut exporters = exporters;
        if driver != "moby" {
            // Only dockerd knows the `moby` exporter.
            exporters.remove("moby");
        }
        Self {
            driver: driver.to_string(),
            version,
            workers,
            store,
            exporters,
            cache_exports,
            cache_imports,
            multiple_exporters,
            platforms,
            named_contexts: parsed.is_some_and(|v| v >= (0, 10)),
            attestations: parsed.is_some_and(|v| v >= (0, 11)),
        }
    }

    /// What to suggest instead of something this daemon lacks.
    fn instead(&self) -> String {
        match self.store {
            StoreKind::Graphdriver => "dockerd's graphdriver store exports only to its image store (`moby`), `local` and `tar`, and exports cache only `inline`: use the docker-container or remote driver (a standalone buildkitd) for this".into(),
            StoreKind::Content => "use a newer BuildKit".into(),
        }
    }

    /// Fails when the daemon cannot export with `exporter`.
    pub fn check_exporter(&self, exporter: &str) -> Result<()> {
        if self.exporters.contains(exporter) {
            return Ok(());
        }
        Err(Error::Unsupported {
            driver: self.driver.clone(),
            what: format!("the {exporter:?} exporter"),
            instead: self.instead(),
        })
    }

    /// Fails when the daemon cannot export cache to `backend`.
    pub fn check_cache_export(&self, backend: &str) -> Result<()> {
        if self.cache_exports.contains(backend) {
            return Ok(());
        }
        Err(Error::Unsupported {
            driver: self.driver.clone(),
            what: format!("cache export to {backend:?}"),
            instead: self.instead(),
        })
    }

    /// Fails when the daemon cannot import cache from `backend`.
    pub fn check_cache_import(&self, backend: &str) -> Result<()> {
        if self.cache_imports.contains(backend) {
            return Ok(());
        }
        Err(Error::Unsupported {
            driver: self.driver.clone(),
            what: format!("cache import from {backend:?}"),
            instead: self.instead(),
        })
    }

    /// Fails when frontend attrs need a newer daemon: named contexts (`context:*`) and
    /// attestations (`attest:*`). Nothing is sent, so an old frontend never mistakes a
    /// context name for an image to pull from Docker Hub.
    pub fn check_frontend_attrs<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> Result<()> {
        let old = |what: &str, since: &str| Error::Unsupported {
            driver: self.driver.clone(),
            what: what.to_string(),
            instead: format!(
                "its BuildKit{} predates them ({since}): use the docker-container or remote driver, or a newer Docker Engine",
                self.version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default()
            ),
        };
        for k in keys {
            if k.starts_with("context:") && !self.named_contexts {
                return Err(old("named contexts (--build-context)", "BuildKit v0.10"));
            }
            if k.starts_with("attest:") && !self.attestations {
                return Err(old("attestations (SBOM, provenance)", "BuildKit v0.11"));
            }
        }
        Ok(())
    }

    /// Fails when several exporters are asked of a daemon that takes one.
    pub fn check_exporter_count(&self, n: usize) -> Result<()> {
        if n <= 1 || self.multiple_exporters {
            return Ok(());
        }
        Err(Error::Unsupported {
            driver: self.driver.clone(),
            what: format!("{n} exporters in one build"),
            instead: "it takes one exporter per build (BuildKit v0.13+ takes several): run one build per output, or use a newer BuildKit".into(),
        })
    }
}

/// `(major, minor)` of `v0.34.2`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim_start_matches('v').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A channel to a Control API over connections made by `connect` (each call gives a
/// new byte stream: a socket, an upgraded HTTP connection, an exec's stdio).
pub async fn channel_with<F, Fut, IO>(driver: &str, connect: F) -> Result<Channel>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let endpoint = Endpoint::from_static("http://buildkitd")
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .tcp_nodelay(true);
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let connect = connect.clone();
            async move { connect().await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            Error::Connect {
                driver: driver.to_string(),
                message: msg,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphdriver_capabilities_and_messages() {
        let caps = Capabilities::from_parts(
            "moby",
            vec![WorkerRecord {
                id: "moby".into(),
                ..Default::default()
            }],
            None,
            StoreKind::Graphdriver,
        );
        assert!(caps.check_exporter("moby").is_ok());
        let err = caps.check_exporter("oci").unwrap_err().to_string();
        assert!(err.contains("driver moby"), "{err}");
        assert!(err.contains("\"oci\""), "{err}");
        assert!(err.contains("docker-container or remote driver"), "{err}");
        assert!(caps.check_cache_export("inline").is_ok());
        assert!(caps.check_cache_export("registry").is_err());
        assert!(caps.check_exporter_count(2).is_err());
    }

    #[test]
    fn buildkitd_capabilities() {
        let caps =
            Capabilities::from_parts("remote", vec![], Some("v0.34.2".into()), StoreKind::Content);
        for e in ["image", "oci", "docker", "local", "tar"] {
            assert!(caps.check_exporter(e).is_ok(), "{e}");
        }
        assert!(caps.check_exporter("moby").is_err());
        assert!(caps.check_exporter_count(3).is_ok());
        assert!(caps.check_cache_export("local").is_ok());
        assert_eq!(parse_version("v0.9.0"), Some((0, 9)));
    }
}
