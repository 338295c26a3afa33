//! The `remote` driver: a buildkitd reached over a unix socket or TCP, optionally
//! with mutual TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use docker_api::Endpoint;
use docker_api::tls::TlsOptions;
use tonic::transport::Channel;

use crate::driver::{BoxFuture, Driver, channel_with};
use crate::error::{Error, Result};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// buildkitd's default socket.
pub const DEFAULT_ADDRESS: &str = "unix:///run/buildkit/buildkitd.sock";

/// A standalone buildkitd.
///
/// ```no_run
/// # fn demo() -> Result<(), buildkit_driver::Error> {
/// use buildkit_driver::Remote;
/// use docker_api::tls::TlsOptions;
/// let local = Remote::from_env()?; // BUILDKIT_HOST, or the default socket
/// let secure = Remote::new("tcp://buildkit.internal:1234")?.tls(TlsOptions {
///     ca: Some("ca.pem".into()),
///     cert: Some("cert.pem".into()),
///     key: Some("key.pem".into()),
///     server_name: Some("buildkitd".into()),
/// })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Remote {
    addr: Endpoint,
    display: String,
    tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
}

impl Remote {
    /// A buildkitd at `unix:///path` or `tcp://host:port`.
    pub fn new(address: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("BuildKit address {address:?}: {why}"));
        let addr = if let Some(p) = address.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(bad("no socket path"));
            }
            Endpoint::Unix(PathBuf::from(p))
        } else if let Some(hp) = address.strip_prefix("tcp://") {
            let hp = hp.trim_end_matches('/');
            let (h, p) = hp
                .rsplit_once(':')
                .ok_or_else(|| bad("tcp:// needs host:port"))?;
            let port = p.parse::<u16>().map_err(|_| bad("invalid port"))?;
            Endpoint::Tcp {
                host: h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            }
        } else {
            return Err(bad("use unix:///path or tcp://host:port"));
        };
        Ok(Self {
            addr,
            display: address.to_string(),
            tls: None,
        })
    }

    /// `BUILDKIT_HOST`, or buildkitd's default socket.
    pub fn from_env() -> Result<Self> {
        let addr = std::env::var("BUILDKIT_HOST")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        Self::new(&addr)
    }

    /// Uses (mutual) TLS: the CA to trust, the client certificate and key, and the
    /// server name to verify (default: the host). TCP only.
    pub fn tls(mut self, opts: TlsOptions) -> Result<Self> {
        if matches!(self.addr, Endpoint::Unix(_)) {
            return Err(Error::Invalid(format!(
                "{}: TLS needs a tcp:// address",
                self.display
            )));
        }
        let config = opts
            .client_config()
            .map_err(|e| Error::Invalid(format!("TLS for {}: {e}", self.display)))?;
        let mut config = (*config).clone();
        // gRPC servers require HTTP/2 to be negotiated.
        config.alpn_protocols = vec![b"h2".to_vec()];
        self.tls = Some((Arc::new(config), opts.server_name));
        Ok(self)
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.display
    }
}

impl Driver for Remote {
    fn name(&self) -> &str {
        "remote"
    }

    fn channel(&self) -> BoxFuture<'_, Result<Channel>> {
        let addr = self.addr.clone();
        let tls = self.tls.clone();
        let display = self.display.clone();
        Box::pin(async move {
            let connect = move || {
                let addr = addr.clone();
                let tls = tls.clone();
                async move {
                    let (config, name) = match &tls {
                        Some((c, n)) => (Some(c), n.as_deref()),
                        None => (None, None),
                    };
                    docker_api::dial(&addr, config, name, CONNECT_TIMEOUT).await
                }
            };
            // Dial once up front for a clear error naming the address.
            match connect().await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::Connect {
                        driver: "remote".into(),
                        message: format!("connecting to {display} timed out"),
                    });
                }
                Err(e) => {
                    return Err(Error::Connect {
                        driver: "remote".into(),
                        message: format!(
                            "cannot connect to {display}: {e} (set BUILDKIT_HOST to use another address)"
                        ),
                    });
                }
            }
            channel_with("remote", connect).await
        })
    }
}
