//! Where the daemon is and how bytes get there: unix sockets, plain TCP and TLS.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::error::BoxError;

/// The default Docker socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A Docker daemon address.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port`, `http://host:port`, `https://...`,
    /// or a bare absolute socket path.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let addr = addr.trim();
        if let Some(path) = addr.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{addr:?} has no socket path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if addr.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(addr)));
        }
        let rest = ["tcp://", "http://", "https://"]
            .iter()
            .find_map(|p| addr.strip_prefix(p))
            .ok_or_else(|| {
                format!("{addr:?} is not a supported address (use unix:///path or tcp://host:port)")
            })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("{addr:?} has an invalid port {p:?}"))?;
                (h, port)
            }
            _ => (rest, 2375),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{addr:?} has no host"));
        }
        Ok(Self::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An open connection to a daemon, of whichever kind: what [`dial`] returns.
pub enum Stream {
    /// Over a unix socket.
    Unix(UnixStream),
    /// Over plain TCP.
    Tcp(TcpStream),
    /// Over TLS on TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens one connection to `endpoint` within `timeout`: the socket, or TCP (no
/// Nagle delay) wrapped in TLS when `tls` is given, verifying `server_name` (by
/// default the host). Also the transport of other clients of a daemon address,
/// such as a remote buildkitd.
pub async fn dial(
    endpoint: &Endpoint,
    tls: Option<&Arc<ClientConfig>>,
    server_name: Option<&str>,
    timeout: Duration,
) -> io::Result<Stream> {
    let fut = async {
        match endpoint {
            Endpoint::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
            Endpoint::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                match tls {
                    None => Ok(Stream::Tcp(tcp)),
                    Some(config) => {
                        let name = server_name.unwrap_or(host);
                        let tls = crate::tls::connect(config.clone(), name, tcp).await?;
                        Ok(Stream::Tls(Box::new(tls)))
                    }
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting took longer than {timeout:?}"),
        )),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Unix(s) => s.is_write_vectored(),
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// The hyper connector: ignores the request URI and dials the configured endpoint.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) tls_server_name: Option<Arc<str>>,
    pub(crate) connect_timeout: Duration,
}

impl Connector {
    pub(crate) async fn dial(&self) -> io::Result<Stream> {
        dial(
            &self.endpoint,
            self.tls.as_ref(),
            self.tls_server_name.as_deref(),
            self.connect_timeout,
        )
        .await
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(TokioIo::new(this.dial().await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("/run/d.sock").unwrap(),
            Endpoint::Unix("/run/d.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2376").unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 2376
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:2376").unwrap(),
            Endpoint::Tcp {
                host: "::1".into(),
                port: 2376
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://docker").unwrap(),
            Endpoint::Tcp {
                host: "docker".into(),
                port: 2375
            }
        );
        assert!(
            Endpoint::parse("ssh://host")
                .unwrap_err()
                .contains("not a supported")
        );
        assert!(
            Endpoint::parse("tcp://h:notaport")
                .unwrap_err()
                .contains("invalid port")
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:2376").unwrap().to_string(),
            "tcp://[::1]:2376"
        );
    }
}
