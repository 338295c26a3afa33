//! The `remote` driver: a buildkitd reached over a unix socket or TCP, optionally
//! with mutual TLS.

use std::path::PathBuf;
use std::sync::Arc;

use docker_api::tls::TlsOptions;
use tonic::transport::Channel;

use crate::driver::{BoxFuture, Driver, channel_with};
use crate::error::{Error, Result};

/// buildkitd's default socket.
pub const DEFAULT_ADDRESS: &str = "unix:///run/buildkit/buildkitd.sock";

#[derive(Debug, Clone)]
enum Addr {
    Unix(PathBuf),
    Tcp(String, u16),
}

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
    addr: Addr,
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
            Addr::Unix(PathBuf::from(p))
        } else if let Some(hp) = address.strip_prefix("tcp://") {
            let hp = hp.trim_end_matches('/');
            let (h, p) = hp
                .rsplit_once(':')
                .ok_or_else(|| bad("tcp:// needs host:port"))?;
            let port = p.parse::<u16>().map_err(|_| bad("invalid port"))?;
            Addr::Tcp(
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            )
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
        if matches!(self.addr, Addr::Unix(_)) {
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

/// The connection types of the remote driver.
enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls_stream::TlsStream>),
}

mod tokio_rustls_stream {
    /// A client TLS stream over TCP.
    pub(super) type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
            Conn::Tcp($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = std::pin::Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
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
                    match addr {
                        Addr::Unix(p) => tokio::net::UnixStream::connect(&p).await.map(Conn::Unix),
                        Addr::Tcp(h, port) => {
                            let tcp = tokio::net::TcpStream::connect((h.as_str(), port)).await?;
                            tcp.set_nodelay(true)?;
                            match tls {
                                None => Ok(Conn::Tcp(tcp)),
                                Some((config, name)) => {
                                    let name = name.unwrap_or(h);
                                    let s = docker_api::tls::connect(config, &name, tcp).await?;
                                    Ok(Conn::Tls(Box::new(s)))
                                }
                            }
                        }
                    }
                }
            };
            // Dial once up front for a clear error naming the address.
            let probe = tokio::time::timeout(std::time::Duration::from_secs(20), connect()).await;
            match probe {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Error::Connect {
                        driver: "remote".into(),
                        message: format!(
                            "cannot connect to {display}: {e} (set BUILDKIT_HOST to use another address)"
                        ),
                    });
                }
                Err(_) => {
                    return Err(Error::Connect {
                        driver: "remote".into(),
                        message: format!("connecting to {display} timed out"),
                    });
                }
            }
            channel_with("remote", connect).await
        })
    }
}
