//! Exec endpoints: run a process in a running container, attached through a hijacked
//! connection that carries stdin one way and (multiplexed) stdout/stderr the other.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::client::Upgraded;
use crate::error::{ErrorKind, Result};
use crate::mux::{Demuxer, Piece, StreamKind};
use crate::util::{nullable, path};
use crate::{Body, Docker};

/// How much stderr an [`ExecIo`] keeps by default.
pub const DEFAULT_STDERR_TAIL: usize = 64 * 1024;

/// Exec endpoints; see [`Docker::exec`].
#[derive(Debug, Clone, Copy)]
pub struct Exec<'a> {
    docker: &'a Docker,
}

impl<'a> Exec<'a> {
    pub(crate) fn new(docker: &'a Docker) -> Self {
        Self { docker }
    }

    /// `POST /containers/{id}/exec`: prepares a process; returns the exec id.
    pub async fn create(&self, container: &str, config: &ExecConfig) -> Result<String> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let body = Body::json(config).map_err(|e| {
            self.docker
                .err(ErrorKind::Config(format!("exec config: {e}")))
        })?;
        let created: Created = self
            .docker
            .json(
                http::Method::POST,
                &format!("/containers/{}/exec", path(container)),
                Some(body),
            )
            .await?;
        Ok(created.id)
    }

    /// `POST /exec/{id}/start`, attached: the connection is hijacked (`Upgrade: tcp`)
    /// and returned as a duplex byte stream. Reads yield the process's stdout
    /// (demultiplexed, unless the exec has a TTY); stderr is kept in
    /// [`ExecIo::stderr`]; writes go to its stdin (if the exec attached stdin) and
    /// shutting down the writer closes stdin.
    pub async fn start(&self, id: &str, options: &ExecStartOptions) -> Result<ExecIo> {
        let tty = match options.tty {
            Some(t) => t,
            None => self
                .inspect(id)
                .await?
                .process_config
                .is_some_and(|p| p.tty),
        };
        let body =
            Body::json(&serde_json::json!({"Detach": false, "Tty": tty})).expect("static JSON");
        let io = self
            .docker
            .upgrade(&format!("/exec/{}/start", path(id)), "tcp", [], body)
            .await?;
        Ok(ExecIo::new(io, !tty, options.stderr_tail))
    }

    /// `POST /exec/{id}/start` detached: the process runs in the background.
    pub async fn start_detached(&self, id: &str) -> Result<()> {
        let body =
            Body::json(&serde_json::json!({"Detach": true, "Tty": false})).expect("static JSON");
        self.docker
            .call(
                http::Method::POST,
                &format!("/exec/{}/start", path(id)),
                Some(body),
            )
            .await
    }

    /// `GET /exec/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ExecInspect> {
        self.docker
            .json(http::Method::GET, &format!("/exec/{}/json", path(id)), None)
            .await
    }

    /// Runs `cmd` in `container` and collects its stdout, stderr (all of it) and exit
    /// code. For output too large to hold, use [`Exec::start`] and read the stream.
    pub async fn run(&self, container: &str, config: &ExecConfig) -> Result<ExecOutput> {
        let config = config.clone().attach_stdin(false);
        let id = self.create(container, &config).await?;
        let mut io = self
            .start(
                &id,
                &ExecStartOptions::new()
                    .tty(config.tty)
                    .stderr_tail(usize::MAX),
            )
            .await?;
        let mut stdout = Vec::new();
        io.read_to_end(&mut stdout).await.map_err(|e| {
            self.docker
                .err(ErrorKind::Transport(format!("reading exec {id} output")))
                .with_source(e)
        })?;
        let stderr = io.stderr().take();
        let exit_code = self.exit_code(&id).await?;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    /// The exit code of a finished exec. The daemon records it just after the
    /// output stream closes, so this polls briefly (up to 10 s) until it is set.
    pub async fn exit_code(&self, id: &str) -> Result<i64> {
        let mut delay = Duration::from_millis(5);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let i = self.inspect(id).await?;
            if !i.running
                && let Some(code) = i.exit_code
            {
                return Ok(code);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.docker.err(ErrorKind::Transport(format!(
                    "exec {id} reported no exit code within 10 s (running: {})",
                    i.running
                ))));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}

/// A process to run with [`Exec::create`].
///
/// ```
/// use docker_api::ExecConfig;
/// let exec = ExecConfig::new(["buildctl", "dial-stdio"]).attach_stdin(true).env("A", "1");
/// # let _ = exec;
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    cmd: Vec<String>,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    privileged: bool,
}

impl ExecConfig {
    /// Runs `cmd` with stdout and stderr attached, no stdin, no TTY.
    pub fn new<I, S>(cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            cmd: cmd.into_iter().map(Into::into).collect(),
            attach_stdin: false,
            attach_stdout: true,
            attach_stderr: true,
            tty: false,
            env: Vec::new(),
            user: None,
            working_dir: None,
            privileged: false,
        }
    }

    /// Attach stdin, so that writes to the [`ExecIo`] reach the process.
    pub fn attach_stdin(mut self, attach: bool) -> Self {
        self.attach_stdin = attach;
        self
    }

    /// Attach stdout (default on).
    pub fn attach_stdout(mut self, attach: bool) -> Self {
        self.attach_stdout = attach;
        self
    }

    /// Attach stderr (default on).
    pub fn attach_stderr(mut self, attach: bool) -> Self {
        self.attach_stderr = attach;
        self
    }

    /// Allocate a TTY: output is raw (stdout and stderr merged).
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.env
            .push(format!("{}={}", key.as_ref(), value.as_ref()));
        self
    }

    /// The user to run as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Run privileged.
    pub fn privileged(mut self, privileged: bool) -> Self {
        self.privileged = privileged;
        self
    }
}

/// Options for [`Exec::start`].
#[derive(Debug, Clone)]
pub struct ExecStartOptions {
    tty: Option<bool>,
    stderr_tail: usize,
}

impl Default for ExecStartOptions {
    fn default() -> Self {
        Self {
            tty: None,
            stderr_tail: DEFAULT_STDERR_TAIL,
        }
    }
}

impl ExecStartOptions {
    /// Defaults: the TTY setting is read from the exec; the last 64 KiB of stderr
    /// are kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the exec has a TTY (saves the inspect call). Must match the exec.
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = Some(tty);
        self
    }

    /// How many of the last stderr bytes to keep (older ones are dropped).
    pub fn stderr_tail(mut self, bytes: usize) -> Self {
        self.stderr_tail = bytes;
        self
    }
}

/// The collected result of [`Exec::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything written to stdout (with a TTY: all output).
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// The exit code.
    pub exit_code: i64,
}

/// The last bytes an exec wrote to stderr; a cheap clone shares them. Useful to
/// explain why a process behind an [`ExecIo`] went away.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Debug, Default)]
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    dropped: u64,
}

impl StderrTail {
    fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tail {
                buf: VecDeque::new(),
                cap,
                dropped: 0,
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.buf.extend(data);
        if t.buf.len() > t.cap {
            let excess = t.buf.len() - t.cap;
            t.buf.drain(..excess);
            t.dropped += excess as u64;
        }
    }

    /// A copy of the bytes kept so far.
    pub fn contents(&self) -> Vec<u8> {
        let t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.buf.iter().copied().collect()
    }

    /// The bytes kept so far, as text.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }

    /// Takes the bytes kept so far, leaving the tail empty.
    pub fn take(&self) -> Vec<u8> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut t.buf).into()
    }

    /// How many older bytes were dropped to respect the limit.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

/// An attached exec: a plain `AsyncRead + AsyncWrite` duplex.
///
/// Reads return the process's stdout only (Docker's 8-byte frame headers removed;
/// with a TTY, the raw stream); stderr goes to [`ExecIo::stderr`]. Writes go to
/// stdin; `shutdown` half-closes the connection, which closes the process's stdin
/// while its output keeps flowing.
pub struct ExecIo {
    inner: DemuxIo<Upgraded>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("multiplexed", &self.inner.demux.is_some())
            .finish_non_exhaustive()
    }
}

impl ExecIo {
    fn new(io: Upgraded, multiplexed: bool, stderr_tail: usize) -> Self {
        Self {
            inner: DemuxIo::new(io, multiplexed, stderr_tail),
        }
    }

    /// The stderr kept so far (and from now on; the handle is shared).
    pub fn stderr(&self) -> StderrTail {
        self.inner.stderr.clone()
    }
}

impl AsyncRead for ExecIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExecIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.io.is_write_vectored()
    }
}

/// The reading half of [`ExecIo`], generic so it can be tested on any stream.
struct DemuxIo<T> {
    io: T,
    demux: Option<Demuxer>,
    /// Received bytes not yet demultiplexed.
    pending: Bytes,
    /// Demultiplexed stdout not yet returned.
    stdout: Bytes,
    stderr: StderrTail,
    scratch: BytesMut,
}

impl<T> DemuxIo<T> {
    fn new(io: T, multiplexed: bool, stderr_tail: usize) -> Self {
        Self {
            io,
            demux: multiplexed.then(Demuxer::default),
            pending: Bytes::new(),
            stdout: Bytes::new(),
            stderr: StderrTail::new(stderr_tail),
            scratch: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DemuxIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(demux) = &mut this.demux else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        loop {
            if !this.stdout.is_empty() {
                let n = this.stdout.len().min(buf.remaining());
                buf.put_slice(&this.stdout.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match demux.next(&mut this.pending)? {
                Piece::Data(StreamKind::Stderr, data) => this.stderr.push(&data),
                Piece::Data(_, data) => this.stdout = data,
                Piece::NeedMore => {
                    this.scratch.clear();
                    this.scratch.resize(32 * 1024, 0);
                    let mut rb = ReadBuf::new(&mut this.scratch);
                    ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        if demux.at_boundary() {
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "exec output ended in the middle of a frame",
                        )));
                    }
                    this.scratch.truncate(n);
                    this.pending = this.scratch.split().freeze();
                }
            }
        }
    }
}

/// The answer to [`Exec::inspect`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ExecInspect {
    /// Exec id.
    #[serde(default, rename = "ID")]
    pub id: String,
    /// The container it runs in.
    #[serde(default, rename = "ContainerID")]
    pub container_id: String,
    /// Whether it runs.
    #[serde(default)]
    pub running: bool,
    /// The exit code, once it has exited.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Process id on the host (0 when not running).
    #[serde(default)]
    pub pid: i64,
    /// Whether stdin is open.
    #[serde(default)]
    pub open_stdin: bool,
    /// The process.
    #[serde(default)]
    pub process_config: Option<ProcessConfig>,
}

/// The process of an exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// Whether it has a TTY.
    #[serde(default)]
    pub tty: bool,
    /// The executable.
    #[serde(default)]
    pub entrypoint: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "nullable")]
    pub arguments: Vec<String>,
    /// Whether it is privileged.
    #[serde(default)]
    pub privileged: bool,
    /// The user.
    #[serde(default)]
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn reads_only_stdout_and_keeps_a_bounded_stderr_tail() {
        let (mut peer, ours) = tokio::io::duplex(7);
        let mut io = DemuxIo::new(ours, true, 5);
        let stderr = io.stderr.clone();
        tokio::spawn(async move {
            let mut all = frame(1, b"out-1 ");
            all.extend(frame(2, b"err-one "));
            all.extend(frame(1, b"out-2"));
            all.extend(frame(2, b"err-two"));
            // Dribbled in small writes so frames straddle reads.
            for chunk in all.chunks(3) {
                peer.write_all(chunk).await.unwrap();
            }
        });
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"out-1 out-2");
        assert_eq!(stderr.contents(), b"r-two");
        assert_eq!(stderr.dropped(), 10);
    }

    #[tokio::test]
    async fn tiny_read_buffers_get_every_byte() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut io = DemuxIo::new(ours, true, 16);
        tokio::spawn(async move {
            peer.write_all(&frame(1, b"abcdefghij")).await.unwrap();
        });
        let mut out = Vec::new();
        let mut one = [0u8; 3];
        loop {
            let n = io.read(&mut one).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&one[..n]);
        }
        assert_eq!(out, b"abcdefghij");
    }

    #[tokio::test]
    async fn tty_streams_are_raw_and_cut_frames_are_errors() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut io = DemuxIo::new(ours, false, 16);
        tokio::spawn(async move { peer.write_all(b"\x01\x00raw").await.unwrap() });
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"\x01\x00raw");

        let (mut peer, ours) = tokio::io::duplex(64);
        let mut io = DemuxIo::new(ours, true, 16);
        tokio::spawn(async move { peer.write_all(&frame(1, b"abc")[..9]).await.unwrap() });
        let err = io.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
