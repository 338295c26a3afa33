//! The [`Docker`] handle: connection settings, API version negotiation, requests and
//! HTTP upgrades.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OnceCell;

use crate::body::{Body, JsonStream, JsonStreamError};
use crate::error::{Error, ErrorKind, Result};
use crate::tls::TlsOptions;
use crate::transport::{Connector, DEFAULT_SOCKET, Endpoint};

/// The newest Engine API version this client speaks. The version used is the lower
/// of this and the daemon's, unless overridden.
pub const MAX_API_VERSION: ApiVersion = ApiVersion::new(1, 47);

/// The version assumed when the daemon does not say (the oldest it could be).
pub const MIN_API_VERSION: ApiVersion = ApiVersion::new(1, 24);

/// The host name sent on requests over unix sockets, as the Docker CLI does.
const LOCAL_HOST: &str = "api.moby.localhost";

/// An Engine API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version (1).
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl ApiVersion {
    /// A version.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for ApiVersion {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().trim_start_matches('v');
        let (a, b) = s
            .split_once('.')
            .ok_or_else(|| format!("API version {s:?} is not MAJOR.MINOR"))?;
        let parse = |x: &str| {
            x.parse::<u16>()
                .map_err(|_| format!("API version {s:?} is not MAJOR.MINOR"))
        };
        Ok(Self::new(parse(a)?, parse(b)?))
    }
}

/// How to reach a daemon; see [`Docker::builder`].
#[derive(Debug, Clone)]
pub struct DockerBuilder {
    endpoint: Option<Endpoint>,
    tls: Option<TlsOptions>,
    api_version: Option<ApiVersion>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    error: Option<String>,
}

impl Default for DockerBuilder {
    fn default() -> Self {
        Self {
            endpoint: None,
            tls: None,
            api_version: None,
            timeout: Some(Duration::from_secs(120)),
            connect_timeout: Duration::from_secs(10),
            error: None,
        }
    }
}

impl DockerBuilder {
    /// The daemon address (`unix:///var/run/docker.sock`, `tcp://host:2376`).
    /// `https://host:port` also turns TLS on (trusting the public web PKI) unless
    /// [`DockerBuilder::tls`] says otherwise.
    pub fn address(mut self, addr: &str) -> Self {
        match Endpoint::parse(addr) {
            Ok(e) => self.endpoint = Some(e),
            Err(e) => self.error = Some(e),
        }
        if addr.trim().starts_with("https://") && self.tls.is_none() {
            self.tls = Some(TlsOptions::default());
        }
        self
    }

    /// The daemon address, already parsed.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Connect over TLS (TCP endpoints only).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Use this API version instead of negotiating one.
    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = Some(version);
        self
    }

    /// The limit for ordinary calls (default 120 s); `None` for no limit. Streamed
    /// answers (logs, events) are limited only until their response starts; calls
    /// whose answer only starts after long work (build, pull, push, load, save,
    /// wait, stop, build-cache prune) have no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limit for establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Reads `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH` and
    /// `DOCKER_API_VERSION`, as the Docker CLI does. Values set on the builder
    /// before this call are overwritten by the variables that are set.
    ///
    /// TLS applies to TCP addresses when `DOCKER_TLS_VERIFY` is set (and not `0`) or
    /// `DOCKER_CERT_PATH` is set, with `ca.pem`, `cert.pem` and `key.pem` from
    /// `DOCKER_CERT_PATH` (default `~/.docker`). Unlike the CLI, the server's
    /// certificate is always verified.
    pub fn from_env(self) -> Self {
        self.apply_vars(env_nonempty)
    }

    fn apply_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(host) = var("DOCKER_HOST") {
            self = self.address(&host);
        }
        let verify = var("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0");
        let cert_path = var("DOCKER_CERT_PATH");
        let tcp = matches!(self.endpoint, Some(Endpoint::Tcp { .. }));
        if tcp && (verify || cert_path.is_some()) {
            let dir = cert_path
                .map(std::path::PathBuf::from)
                .or_else(|| var("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")));
            match dir {
                Some(dir) => self.tls = Some(TlsOptions::from_cert_dir(dir)),
                None => {
                    self.error = Some(
                        "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is".into(),
                    )
                }
            }
        }
        if let Some(v) = var("DOCKER_API_VERSION") {
            match v.parse() {
                Ok(v) => self.api_version = Some(v),
                Err(e) => self.error = Some(format!("DOCKER_API_VERSION: {e}")),
            }
        }
        self
    }

    /// Checks the settings and creates the handle. Nothing is dialled yet.
    pub fn build(self) -> Result<Docker> {
        let endpoint = self
            .endpoint
            .unwrap_or_else(|| Endpoint::Unix(DEFAULT_SOCKET.into()));
        let ep_str = endpoint.to_string();
        if let Some(e) = self.error {
            return Err(Error::new(ErrorKind::Config(e), ep_str));
        }
        let (tls, tls_server_name) = match (&self.tls, &endpoint) {
            (None, _) => (None, None),
            (Some(_), Endpoint::Unix(_)) => {
                return Err(Error::new(
                    ErrorKind::Config("TLS was requested for a unix socket".into()),
                    ep_str,
                ));
            }
            (Some(opts), Endpoint::Tcp { .. }) => {
                let config = opts
                    .client_config()
                    .map_err(|e| Error::new(ErrorKind::Config(e), ep_str.clone()))?;
                (Some(config), opts.server_name.as_deref().map(Arc::from))
            }
        };
        let base = match (&endpoint, tls.is_some()) {
            (Endpoint::Unix(_), _) => format!("http://{LOCAL_HOST}"),
            (Endpoint::Tcp { host, port }, tls) => {
                let scheme = if tls { "https" } else { "http" };
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{port}")
                } else {
                    format!("{scheme}://{host}:{port}")
                }
            }
        };
        let connector = Connector {
            endpoint: Arc::new(endpoint),
            tls,
            tls_server_name,
            connect_timeout: self.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector.clone());
        Ok(Docker {
            inner: Arc::new(Inner {
                endpoint_str: ep_str,
                base,
                client,
                connector,
                version: OnceCell::new(),
                fixed_version: self.api_version,
                timeout: self.timeout,
            }),
        })
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// A handle to one Docker daemon. Cheap to clone; clones share connections and the
/// negotiated API version.
#[derive(Clone)]
pub struct Docker {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint_str: String,
    base: String,
    client: Client<Connector, Body>,
    connector: Connector,
    version: OnceCell<ApiVersion>,
    fixed_version: Option<ApiVersion>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Docker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Docker")
            .field("endpoint", &self.inner.endpoint_str)
            .field("version", &self.inner.version.get())
            .finish()
    }
}

/// The answer to `GET /_ping`.
#[derive(Debug, Clone)]
pub struct Ping {
    /// The daemon's newest API version (`API-Version` header).
    pub api_version: Option<ApiVersion>,
    /// The daemon's OS type (`OSType` header).
    pub os_type: Option<String>,
    /// Whether the daemon runs in experimental mode.
    pub experimental: bool,
    /// The builder the daemon prefers (`Builder-Version`: `1` classic, `2` BuildKit).
    pub builder_version: Option<String>,
}

/// A daemon connection taken over after `101 Switching Protocols`: a raw byte stream
/// in both directions, starting with any bytes the daemon sent right after the 101.
pub struct Upgraded {
    io: TokioIo<hyper::upgrade::Upgraded>,
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upgraded")
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Query-string builder for endpoint paths.
#[derive(Debug, Default, Clone)]
pub struct Query(String);

impl Query {
    /// An empty query.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value`, percent-encoded.
    pub fn push(&mut self, key: &str, value: impl AsRef<str>) -> &mut Self {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.extend(utf8_percent_encode(key, NON_ALPHANUMERIC));
        self.0.push('=');
        self.0
            .extend(utf8_percent_encode(value.as_ref(), NON_ALPHANUMERIC));
        self
    }

    /// Appends `key=value` when `value` is `Some`.
    pub fn opt(&mut self, key: &str, value: Option<impl AsRef<str>>) -> &mut Self {
        if let Some(v) = value {
            self.push(key, v);
        }
        self
    }

    /// Appends `key=1` when `flag` is true.
    pub fn flag(&mut self, key: &str, flag: bool) -> &mut Self {
        if flag {
            self.push(key, "1");
        }
        self
    }

    /// Appends `key=<json>` (Docker's `filters`, `buildargs`, `labels`), unless the
    /// value serialises to an empty object or array.
    pub fn json<T: serde::Serialize>(&mut self, key: &str, value: &T) -> &mut Self {
        let s = serde_json::to_string(value).unwrap_or_default();
        if !s.is_empty() && s != "{}" && s != "[]" && s != "null" {
            self.push(key, s);
        }
        self
    }

    /// The query string, with its leading `?` (or empty).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Docker {
    /// Starts configuring a handle.
    pub fn builder() -> DockerBuilder {
        DockerBuilder::default()
    }

    /// A handle configured from the environment as the Docker CLI is (`DOCKER_HOST`,
    /// default `unix:///var/run/docker.sock`; `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`,
    /// `DOCKER_API_VERSION`).
    pub fn from_env() -> Result<Self> {
        DockerBuilder::default().from_env().build()
    }

    /// A handle for an address (`unix:///path`, `tcp://host:port`) without TLS.
    pub fn connect(addr: &str) -> Result<Self> {
        DockerBuilder::default().address(addr).build()
    }

    /// The endpoint this handle talks to, as text.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint_str
    }

    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::new(kind, self.inner.endpoint_str.clone())
    }

    /// `GET /_ping`: checks that the daemon answers, and reads its API version.
    pub async fn ping(&self) -> Result<Ping> {
        let resp = self
            .send_raw(
                Method::GET,
                "/_ping",
                HeaderMap::new(),
                Body::empty(),
                self.inner.timeout,
            )
            .await?;
        let resp = self.check(resp).await?;
        let h = resp.headers();
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Ping {
            api_version: get("api-version").and_then(|v| v.parse().ok()),
            os_type: get("ostype"),
            experimental: get("docker-experimental").is_some_and(|v| v == "true"),
            builder_version: get("builder-version"),
        })
    }

    /// The API version requests use: the override if one was set, otherwise the lower
    /// of [`MAX_API_VERSION`] and the daemon's, negotiated once with `/_ping`.
    pub async fn api_version(&self) -> Result<ApiVersion> {
        if let Some(v) = self.inner.fixed_version {
            return Ok(v);
        }
        self.inner
            .version
            .get_or_try_init(|| async {
                let ping = self.ping().await?;
                Ok(ping
                    .api_version
                    .unwrap_or(MIN_API_VERSION)
                    .min(MAX_API_VERSION))
            })
            .await
            .copied()
    }

    async fn versioned(&self, path_and_query: &str) -> Result<String> {
        Ok(format!("/v{}{}", self.api_version().await?, path_and_query))
    }

    async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>> {
        let uri = format!("{}{}", self.inner.base, path_and_query);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .body(body)
            .map_err(|e| self.err(ErrorKind::Config(format!("invalid request {uri}: {e}"))))?;
        *req.headers_mut() = headers;
        if matches!(&*self.inner.connector.endpoint, Endpoint::Unix(_)) {
            req.headers_mut()
                .insert(HOST, HeaderValue::from_static(LOCAL_HOST));
        }
        let fut = self.inner.client.request(req);
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| self.err(ErrorKind::Timeout))?,
            None => fut.await,
        };
        res.map_err(|e| self.classify(e))
    }

    fn classify(&self, e: hyper_util::client::legacy::Error) -> Error {
        if e.is_connect() {
            return self.err(ErrorKind::Connect).with_source(e);
        }
        self.err(ErrorKind::Transport("request failed".into()))
            .with_source(e)
    }

    /// Turns an error status into an [`Error`] with the daemon's message.
    pub(crate) async fn check(&self, resp: Response<Incoming>) -> Result<Response<Incoming>> {
        let status = resp.status();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        // An error body is a short JSON message: read at most 64 KiB of it, and
        // give up on a peer that stops sending it.
        let limited = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
        let body = match tokio::time::timeout(Duration::from_secs(30), limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        let message = if message.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            message
        };
        Err(self.err(ErrorKind::Api {
            status: status.as_u16(),
            message,
        }))
    }

    /// Sends a request to a versioned API path (`/containers/json?all=1`) and checks
    /// its status. The daemon's error message becomes the [`Error`].
    ///
    /// With `stream` the call's timeout covers only the start of the response.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Incoming>> {
        let path = self.versioned(path_and_query).await?;
        let resp = self
            .send_raw(method, &path, headers, body, self.inner.timeout)
            .await?;
        self.check(resp).await
    }

    /// Like [`Docker::request`] with no timeout at all: for requests whose response
    /// only starts once long work is done (a build, a push, waiting on a container).
    pub async fn request_unbounded(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Incoming>> {
        let path = self.versioned(path_and_query).await?;
        let resp = self.send_raw(method, &path, headers, body, None).await?;
        self.check(resp).await
    }

    /// A request whose JSON answer is decoded into `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Body>,
    ) -> Result<T> {
        let mut headers = HeaderMap::new();
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let resp = self
            .request(method, path_and_query, headers, body.unwrap_or_default())
            .await?;
        self.read_json(resp).await
    }

    /// A request whose answer is ignored (beyond its status).
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Body>,
    ) -> Result<()> {
        let mut headers = HeaderMap::new();
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let resp = self
            .request(method, path_and_query, headers, body.unwrap_or_default())
            .await?;
        // Drain so the connection can be reused.
        let _ = resp.into_body().collect().await;
        Ok(())
    }

    pub(crate) async fn read_json<T: DeserializeOwned>(
        &self,
        resp: Response<Incoming>,
    ) -> Result<T> {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                self.err(ErrorKind::Transport("reading the response".into()))
                    .with_source(e)
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            self.err(ErrorKind::Decode(format!(
                "{e} in {:?}{}",
                snippet,
                if bytes.len() > 200 { "..." } else { "" }
            )))
        })
    }

    /// The body of a response as a stream of byte chunks.
    pub fn byte_stream(
        &self,
        resp: Response<Incoming>,
    ) -> impl Stream<Item = Result<Bytes>> + Send + Unpin + 'static {
        let this = self.clone();
        resp.into_body().into_data_stream().map_err(move |e| {
            this.err(ErrorKind::Transport("reading the response stream".into()))
                .with_source(e)
        })
    }

    /// The body of a response as a stream of concatenated JSON messages.
    pub fn json_stream<T: DeserializeOwned + Send + 'static>(
        &self,
        resp: Response<Incoming>,
    ) -> impl Stream<Item = Result<T>> + Send + Unpin + 'static {
        let this = self.clone();
        JsonStream::<_, T>::new(resp.into_body().into_data_stream()).map_err(move |e| match e {
            JsonStreamError::Transport(src) => this
                .err(ErrorKind::Transport("reading the response stream".into()))
                .with_source(src),
            other => this.err(ErrorKind::Decode(other.to_string())),
        })
    }

    /// Takes over a connection with an HTTP upgrade: `POST path` with
    /// `Connection: Upgrade` and `Upgrade: <protocol>` plus `headers`. On
    /// `101 Switching Protocols` the raw stream is returned, including any bytes that
    /// arrived together with the 101 response.
    ///
    /// BuildKit uses this with `h2c` for `/grpc` (the client then speaks HTTP/2) and
    /// `/session` (the daemon then speaks HTTP/2 to a server on the client's side);
    /// exec uses it with `tcp`.
    pub async fn upgrade(
        &self,
        path_and_query: &str,
        protocol: &str,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Body,
    ) -> Result<Upgraded> {
        let mut map = HeaderMap::new();
        map.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        map.insert(
            UPGRADE,
            HeaderValue::from_str(protocol).map_err(|_| {
                self.err(ErrorKind::Config(format!(
                    "invalid upgrade protocol {protocol:?}"
                )))
            })?,
        );
        for (k, v) in headers {
            map.append(k, v);
        }
        if !matches!(body.size_hint().exact(), Some(0)) {
            map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let path = self.versioned(path_and_query).await?;
        let resp = self
            .send_raw(Method::POST, &path, map, body, self.inner.timeout)
            .await?;
        let resp = self.check(resp).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.err(ErrorKind::Transport(format!(
                "POST {path_and_query} answered {} instead of 101 Switching Protocols",
                resp.status()
            ))));
        }
        let upgraded = hyper::upgrade::on(resp).await.map_err(|e| {
            self.err(ErrorKind::Transport(format!("upgrading {path_and_query}")))
                .with_source(e)
        })?;
        Ok(Upgraded {
            io: TokioIo::new(upgraded),
        })
    }

    /// Opens a fresh raw connection to the daemon's endpoint (after TLS if configured),
    /// without sending anything. For protocols that speak directly on the socket, such
    /// as HTTP/2 gRPC on Engines that serve it natively.
    pub async fn dial(&self) -> Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.inner
            .connector
            .dial()
            .await
            .map_err(|e| self.err(ErrorKind::Connect).with_source(e))
    }
}

use http_body::Body as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_like_the_cli() {
        let b = DockerBuilder::default().apply_vars(vars(&[
            ("DOCKER_HOST", "tcp://127.0.0.1:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
            ("DOCKER_API_VERSION", "1.41"),
        ]));
        assert_eq!(
            b.endpoint,
            Some(Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 2376
            })
        );
        assert_eq!(b.api_version, Some(ApiVersion::new(1, 41)));
        // Missing files are left out, so only the directory is checked here.
        assert!(b.tls.is_some());
        assert!(b.error.is_none());

        // The default certificate directory is ~/.docker.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".docker")).unwrap();
        std::fs::write(dir.path().join(".docker/ca.pem"), "").unwrap();
        let home = dir.path().to_str().unwrap();
        let b = DockerBuilder::default().apply_vars(vars(&[
            ("DOCKER_HOST", "tcp://h:1"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("HOME", home),
        ]));
        assert_eq!(b.tls.unwrap().ca, Some(dir.path().join(".docker/ca.pem")));

        // TLS never applies to unix sockets, and DOCKER_TLS_VERIFY=0 is off.
        let b = DockerBuilder::default().apply_vars(vars(&[
            ("DOCKER_HOST", "unix:///run/d.sock"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
        ]));
        assert!(b.tls.is_none());
        let b = DockerBuilder::default().apply_vars(vars(&[
            ("DOCKER_HOST", "tcp://h:1"),
            ("DOCKER_TLS_VERIFY", "0"),
        ]));
        assert!(b.tls.is_none());

        // Nothing set: the default socket, negotiated version.
        let b = DockerBuilder::default().apply_vars(vars(&[]));
        assert!(b.endpoint.is_none() && b.tls.is_none() && b.api_version.is_none());
        let d = b.build().unwrap();
        assert_eq!(d.endpoint(), format!("unix://{DEFAULT_SOCKET}"));
    }

    #[test]
    fn bad_environment_is_a_config_error_naming_the_variable() {
        let err = DockerBuilder::default()
            .apply_vars(vars(&[("DOCKER_API_VERSION", "latest")]))
            .build()
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config(_)), "{err}");
        assert!(err.to_string().contains("DOCKER_API_VERSION"), "{err}");
        let err = DockerBuilder::default()
            .apply_vars(vars(&[("DOCKER_HOST", "ssh://me@host")]))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("not a supported address"), "{err}");
    }

    #[test]
    fn https_addresses_turn_tls_on() {
        let b = DockerBuilder::default().address("https://docker.example.com:2376");
        assert!(b.tls.is_some());
        let b = DockerBuilder::default().address("tcp://docker.example.com:2376");
        assert!(b.tls.is_none());
    }
}
