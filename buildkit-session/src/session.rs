//! [`Session`]: an id, a shared key and a set of attachables, served as an HTTP/2 gRPC
//! server over any byte stream.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::router::{Attachable, Dispatch, Router};

/// `X-Docker-Expose-Session-Uuid`: the session id.
pub const HEADER_SESSION_ID: &str = "X-Docker-Expose-Session-Uuid";
/// `X-Docker-Expose-Session-Sharedkey`: lets the daemon reuse local dirs across builds.
pub const HEADER_SESSION_SHARED_KEY: &str = "X-Docker-Expose-Session-Sharedkey";
/// `X-Docker-Expose-Session-Grpc-Method`: one value per served method.
pub const HEADER_SESSION_METHOD: &str = "X-Docker-Expose-Session-Grpc-Method";

/// A BuildKit session: what the daemon calls back into during a build.
///
/// Health checking is always served. Add services with [`Session::attach`], then run
/// the session on a connection to the daemon: [`Session::run_on_docker`] (dockerd's
/// `/session` upgrade), [`crate::tunnel::run_on_control`] (the `Control.Session` stream
/// of buildkitd or dockerd), or [`Session::serve`] on any byte stream.
pub struct Session {
    id: String,
    shared_key: String,
    router: Router,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("shared_key", &self.shared_key)
            .field("methods", &self.router.methods())
            .finish()
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session with a fresh random id and shared key, serving only health checks.
    pub fn new() -> Self {
        let mut router = Router::default();
        Box::new(Health).register(&mut router);
        Self {
            id: new_id(),
            shared_key: new_id(),
            router,
        }
    }

    /// Uses this id instead of a random one (the solve request's `session` must match).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The key under which the daemon keeps local directories between builds: the same
    /// key and directory name lets it transfer only what changed. See
    /// [`shared_key_for`] for a stable key for a directory.
    pub fn with_shared_key(mut self, key: impl Into<String>) -> Self {
        self.shared_key = key.into();
        self
    }

    /// Adds a service.
    pub fn attach(mut self, attachable: impl Attachable) -> Self {
        Box::new(attachable).register(&mut self.router);
        self
    }

    /// Adds a boxed service.
    pub fn attach_boxed(mut self, attachable: Box<dyn Attachable>) -> Self {
        attachable.register(&mut self.router);
        self
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shared key.
    pub fn shared_key(&self) -> &str {
        &self.shared_key
    }

    /// Every method path the session serves (`/pkg.Service/Method`), health included.
    pub fn methods(&self) -> Vec<String> {
        self.router.methods()
    }

    /// True when a service of that name is attached (`moby.filesync.v1.FileSync`).
    pub fn has_service(&self, name: &str) -> bool {
        self.router.has_service(name)
    }

    /// The session headers, as dockerd's `/session` expects them (and, lowercased, as
    /// gRPC metadata on `Control.Session`). Fails, naming the header, when the id or
    /// a method path cannot be a header value: without it the daemon could not
    /// find the session.
    pub fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: &str| -> Result<()> {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| Error::Invalid(format!("session header name {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| Error::Invalid(format!("session header {k}: {v:?}: {e}")))?;
            out.push((name, value));
            Ok(())
        };
        push(HEADER_SESSION_ID, &self.id)?;
        let (key, encoded) = encode_header_value(&self.shared_key);
        push(HEADER_SESSION_SHARED_KEY, &key)?;
        if encoded {
            push(&format!("{HEADER_SESSION_SHARED_KEY}-Encoded"), "1")?;
        }
        for m in self.router.methods() {
            push(HEADER_SESSION_METHOD, &m)?;
        }
        Ok(out)
    }

    /// Serves the session as an HTTP/2 server on `io` (the daemon is the HTTP/2 client)
    /// in a background task. The returned handle ends it.
    pub fn serve<IO>(self, io: IO) -> SessionHandle
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let id = self.id.clone();
        let dispatch = Dispatch(Arc::new(self.router));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            // Large windows for what the daemon sends us, and room to queue file data
            // ahead of the daemon's flow-control window so that none of its window
            // updates finds us idle (measured: ~5% of a large context's wall time).
            builder
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .max_frame_size(1 << 20)
                .max_send_buf_size(8 << 20);
            let conn = builder.serve_connection(TokioIo::new(io), dispatch);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res.map_err(|e| Error::Transport(e.to_string())),
                _ = stop_rx => {
                    conn.as_mut().graceful_shutdown();
                    // Give the daemon a moment to finish in-flight calls, then drop.
                    match tokio::time::timeout(Duration::from_secs(5), conn).await {
                        Ok(res) => res.map_err(|e| Error::Transport(e.to_string())),
                        Err(_) => Ok(()),
                    }
                }
            }
        });
        SessionHandle {
            id,
            stop: Some(stop_tx),
            task: Some(task),
            guards: Vec::new(),
        }
    }

    /// Attaches the session to dockerd through `POST /session` (an `h2c` upgrade with
    /// the session headers) and serves it there.
    pub async fn run_on_docker(self, docker: &docker_api::Docker) -> Result<SessionHandle> {
        let io = docker
            .upgrade(
                "/session",
                "h2c",
                self.headers()?,
                docker_api::Body::empty(),
            )
            .await?;
        Ok(self.serve(io))
    }
}

/// A running session. Dropping it closes the session (the daemon sees the connection
/// go away); [`SessionHandle::close`] does the same and waits for the end.
pub struct SessionHandle {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
    guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl SessionHandle {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keeps `guard` alive as long as the session runs (e.g. a transport task handle).
    pub(crate) fn keep(&mut self, guard: impl std::any::Any + Send) {
        self.guards.push(Box::new(guard));
    }

    /// True once the connection has ended (the daemon closed it, or it failed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Closes the session gracefully and waits until the connection has ended.
    pub async fn close(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the daemon ends the connection.
    pub async fn wait(mut self) -> Result<()> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::Transport(format!("session task failed: {e}"))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A random id in BuildKit's style: 25 lowercase base-36 characters (128 bits).
pub fn new_id() -> String {
    let mut n: u128 = rand::random();
    let mut s = Vec::with_capacity(25);
    for _ in 0..25 {
        let d = (n % 36) as u8;
        n /= 36;
        s.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
    }
    String::from_utf8(s).expect("ascii")
}

/// A shared key that stays the same for a directory on this machine across runs, so
/// that the daemon can reuse what it received in an earlier build of it (as the Docker
/// CLI derives one from the context directory).
pub fn shared_key_for(dir: &std::path::Path) -> String {
    use sha2::Digest;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("{}:{}", host.trim(), dir.display()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Header values must be printable ASCII; anything else is query-escaped with an
/// `-Encoded: 1` companion header, as upstream does.
pub(crate) fn encode_header_value(v: &str) -> (String, bool) {
    if v.chars().all(|c| (' '..='~').contains(&c)) {
        return (v.to_string(), false);
    }
    (
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string(),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_buildkit_ids() {
        let a = new_id();
        assert_eq!(a.len(), 25);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_ne!(a, new_id());
    }

    #[test]
    fn headers_advertise_health_and_the_ids() {
        let s = Session::new().with_id("abc").with_shared_key("key\u{1}");
        let h = s.headers().unwrap();
        let get = |k: &str| -> Vec<String> {
            h.iter()
                .filter(|(n, _)| n.as_str().eq_ignore_ascii_case(k))
                .map(|(_, v)| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(get(HEADER_SESSION_ID), vec!["abc"]);
        assert_eq!(get(HEADER_SESSION_SHARED_KEY), vec!["key%01"]);
        assert_eq!(get("X-Docker-Expose-Session-Sharedkey-Encoded"), vec!["1"]);
        let methods = get(HEADER_SESSION_METHOD);
        assert!(
            methods.contains(&"/grpc.health.v1.Health/Check".to_string()),
            "{methods:?}"
        );
    }

    #[test]
    fn an_id_that_cannot_be_a_header_is_an_error_naming_it() {
        let err = Session::new().with_id("a\nb").headers().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(HEADER_SESSION_ID), "{msg}");
        assert!(msg.contains("\"a\\nb\""), "{msg}");
    }
}
