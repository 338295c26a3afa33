//! A build context as a streamed (optionally gzip-compressed) tar, for the REST
//! `/build` body: the same walker and `.dockerignore` rules as FileSync, bounded
//! memory, errors surfacing to the reader.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_compression::tokio::write::GzipEncoder;
use async_tar::{Builder, EntryType, Header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::context::ignore::parse_dockerignore;
use crate::error::{Error, Result};
use crate::fsutil::mode;
use crate::fsutil::{Entry, WalkOptions, Walker};

/// Bytes buffered between the tar writer and the reader.
const PIPE_SIZE: usize = 256 * 1024;

/// How to pack a context.
#[derive(Debug, Clone)]
pub struct TarOptions {
    /// Gzip-compress the stream (default true).
    pub gzip: bool,
    /// The Dockerfile's path in the context: kept even when `.dockerignore` excludes it
    /// (default `Dockerfile`).
    pub dockerfile: String,
    /// Read `.dockerignore` from the context root (default true).
    pub use_dockerignore: bool,
    /// More exclude patterns, after the `.dockerignore` ones.
    pub exclude_patterns: Vec<String>,
}

impl Default for TarOptions {
    fn default() -> Self {
        Self {
            gzip: true,
            dockerfile: "Dockerfile".into(),
            use_dockerignore: true,
            exclude_patterns: Vec::new(),
        }
    }
}

/// The exclude patterns for `dir`: its `.dockerignore` (when asked), `extra`, and
/// re-includes for the Dockerfile and `.dockerignore` themselves, as the Docker CLI does.
pub fn context_excludes(dir: &Path, opts: &TarOptions) -> Result<Vec<String>> {
    let mut excludes = Vec::new();
    if opts.use_dockerignore {
        match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => excludes = parse_dockerignore(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", dir.join(".dockerignore").display()),
                    e,
                ));
            }
        }
    }
    excludes.extend(opts.exclude_patterns.iter().cloned());
    if !excludes.is_empty() {
        excludes.push(format!("!{}", opts.dockerfile.trim_start_matches("./")));
        excludes.push("!.dockerignore".into());
    }
    Ok(excludes)
}

/// Streams `dir` as a tar (gzip unless disabled). Nothing is read before the stream is
/// polled beyond the walk's first entries; a failure mid-way is returned by `read`.
pub fn context_tar(dir: &Path, opts: &TarOptions) -> Result<ContextTar> {
    let excludes = context_excludes(dir, opts)?;
    let walker = Walker::new(
        dir,
        &WalkOptions {
            exclude_patterns: excludes,
            reset_owner: true,
            ..Default::default()
        },
    )?;
    let (reader, writer) = tokio::io::duplex(PIPE_SIZE);
    let (done_tx, done_rx) = oneshot::channel();
    let gzip = opts.gzip;
    tokio::spawn(async move {
        let res = write_tar(walker, writer, gzip).await;
        let _ = done_tx.send(res.map_err(|e| e.to_string()));
    });
    Ok(ContextTar {
        inner: reader,
        done: Some(done_rx),
    })
}

/// The reading end of [`context_tar`].
#[derive(Debug)]
pub struct ContextTar {
    inner: DuplexStream,
    done: Option<oneshot::Receiver<std::result::Result<(), String>>>,
}

impl AsyncRead for ContextTar {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // End of the pipe: did the writer finish, or fail?
        match self.done.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(rx) => {
                let res = ready!(Pin::new(rx).poll(cx));
                self.done = None;
                match res {
                    Ok(Ok(())) => Poll::Ready(Ok(())),
                    Ok(Err(e)) => Poll::Ready(Err(io::Error::other(format!(
                        "packing the build context: {e}"
                    )))),
                    Err(_) => {
                        Poll::Ready(Err(io::Error::other("packing the build context stopped")))
                    }
                }
            }
        }
    }
}

use std::future::Future;

async fn write_tar(walker: Walker, writer: DuplexStream, gzip: bool) -> Result<()> {
    // The walk runs on a blocking thread and hands entries over a small queue.
    let (tx, mut rx) = mpsc::channel::<Entry>(64);
    let walk = tokio::task::spawn_blocking(move || {
        walker.walk(&mut |e| {
            tx.blocking_send(e)
                .map_err(|_| Error::Transport("tar writer stopped".into()))
        })
    });
    let sink: Box<dyn AsyncWrite + Send + Sync + Unpin> = if gzip {
        Box::new(GzipEncoder::new(writer))
    } else {
        Box::new(writer)
    };
    let mut tar = Builder::new(sink);
    let mut written: Result<()> = Ok(());
    while let Some(entry) = rx.recv().await {
        if let Err(e) = append(&mut tar, entry).await {
            written = Err(e);
            break;
        }
    }
    drop(rx);
    let walked = walk
        .await
        .map_err(|e| Error::Transport(format!("walker failed: {e}")))
        .and_then(|r| r);
    // A failed append is the cause; the walker then only saw the writer go away.
    if let Err(e) = written.and(walked) {
        // Close the pipe without an end-of-archive marker, so the reader can
        // never take the truncated tar for a whole one; finishing into a
        // sink only settles the builder (it refuses to be dropped unfinished).
        *tar.get_mut() = Box::new(tokio::io::sink());
        let _ = tar.finish().await;
        return Err(e);
    }
    let mut sink = tar
        .into_inner()
        .await
        .map_err(|e| Error::io("finishing the tar", e))?;
    sink.shutdown()
        .await
        .map_err(|e| Error::io("finishing the tar", e))?;
    Ok(())
}

async fn append(
    tar: &mut Builder<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    entry: Entry,
) -> Result<()> {
    let st = &entry.stat;
    let m = st.mode;
    let mut h = Header::new_gnu();
    h.set_mode(mode::to_posix_perm(m));
    h.set_uid(st.uid as u64);
    h.set_gid(st.gid as u64);
    h.set_mtime(st.mod_time.div_euclid(1_000_000_000).max(0) as u64);
    h.set_size(0);
    let io_err = |e: io::Error| Error::io(format!("adding {} to the tar", st.path), e);
    let mut path = PathBuf::from(&st.path);
    if mode::is_dir(m) {
        h.set_entry_type(EntryType::Directory);
        path = PathBuf::from(format!("{}/", st.path));
    } else if mode::is_symlink(m) {
        h.set_entry_type(EntryType::Symlink);
        set_link_name(tar, &mut h, &st.linkname).await?;
    } else if m & mode::MODE_DEVICE != 0 {
        h.set_entry_type(if m & mode::MODE_CHAR_DEVICE != 0 {
            EntryType::Char
        } else {
            EntryType::Block
        });
        h.set_device_major(st.devmajor as u32).map_err(io_err)?;
        h.set_device_minor(st.devminor as u32).map_err(io_err)?;
    } else if m & mode::MODE_NAMED_PIPE != 0 {
        h.set_entry_type(EntryType::Fifo);
    } else if !st.linkname.is_empty() {
        h.set_entry_type(EntryType::Link);
        set_link_name(tar, &mut h, &st.linkname).await?;
    } else {
        h.set_entry_type(EntryType::Regular);
        let file = crate::fsutil::open_listed_file(&entry.abs).map_err(io_err)?;
        let file = tokio::fs::File::from_std(file);
        // Send exactly the size listed: a file growing meanwhile must not break the tar.
        h.set_size(st.size as u64);
        let data = tokio::io::AsyncReadExt::take(file, st.size as u64);
        let mut padded = PadTo {
            inner: data,
            remaining: st.size as u64,
        };
        return tar
            .append_data(&mut h, &path, &mut padded)
            .await
            .map_err(io_err);
    }
    tar.append_data(&mut h, &path, tokio::io::empty())
        .await
        .map_err(io_err)
}

/// Link names over 100 bytes need a GNU long-link entry first.
async fn set_link_name(
    tar: &mut Builder<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    h: &mut Header,
    name: &str,
) -> Result<()> {
    if name.len() < 100 {
        return h
            .set_link_name(name)
            .map_err(|e| Error::io(format!("link name {name:?}"), e));
    }
    let mut long = Header::new_gnu();
    long.set_entry_type(EntryType::GNULongLink);
    let data = format!("{name}\0");
    long.set_size(data.len() as u64);
    long.set_mode(0o644);
    long.set_path("././@LongLink")
        .map_err(|e| Error::io("long link", e))?;
    long.set_cksum();
    tar.append(&long, data.as_bytes())
        .await
        .map_err(|e| Error::io("long link", e))?;
    let cut: String = name.chars().take(99).collect();
    h.set_link_name(cut.as_str())
        .map_err(|e| Error::io("link name", e))
}

/// Pads a shrunken file with zeros up to the size in its header.
struct PadTo<R> {
    inner: R,
    remaining: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for PadTo<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.remaining == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let mut n = (buf.filled().len() - before) as u64;
        if n == 0 {
            let fill = (self.remaining as usize).min(buf.remaining());
            buf.put_slice(&vec![0u8; fill]);
            n = fill as u64;
        }
        self.remaining -= n.min(self.remaining);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn packs_with_dockerignore_and_keeps_the_dockerfile() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("src")).unwrap();
        std::fs::write(r.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(r.join(".dockerignore"), "*.secret\nDockerfile\n").unwrap();
        std::fs::write(r.join("a.secret"), "no").unwrap();
        std::fs::write(r.join("src/main.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("src/main.rs", r.join("link")).unwrap();
        let long_target = "x".repeat(150);
        std::os::unix::fs::symlink(&long_target, r.join("longlink")).unwrap();

        for gzip in [false, true] {
            let mut rd = context_tar(
                r,
                &TarOptions {
                    gzip,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut bytes = Vec::new();
            rd.read_to_end(&mut bytes).await.unwrap();
            let plain = if gzip {
                assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
                let mut out = Vec::new();
                let mut dec = async_compression::tokio::bufread::GzipDecoder::new(&bytes[..]);
                dec.read_to_end(&mut out).await.unwrap();
                out
            } else {
                bytes
            };
            let ar = async_tar::Archive::new(&plain[..]);
            let mut entries = ar.entries().unwrap();
            let mut names = Vec::new();
            use futures_util::StreamExt;
            while let Some(e) = entries.next().await {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().to_string();
                if name == "src/main.rs" {
                    let mut s = String::new();
                    e.read_to_string(&mut s).await.unwrap();
                    assert_eq!(s, "fn main() {}");
                }
                if name == "longlink" {
                    assert_eq!(
                        e.link_name().unwrap().unwrap().to_string_lossy(),
                        long_target
                    );
                }
                assert_eq!(e.header().uid().unwrap(), 0);
                names.push(name);
            }
            assert_eq!(
                names,
                vec![
                    ".dockerignore",
                    "Dockerfile",
                    "link",
                    "longlink",
                    "src/",
                    "src/main.rs"
                ]
            );
        }
    }

    #[tokio::test]
    async fn bad_dockerignore_patterns_are_refused_up_front() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".dockerignore"), "[bad").unwrap();
        let err = context_tar(d.path(), &TarOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exclude patterns"), "{err}");
    }

    #[tokio::test]
    async fn a_walk_failing_midway_is_an_error_for_the_reader() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(d.path().join("z")).unwrap();
        let bad = d
            .path()
            .join("z")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff"));
        std::fs::write(bad, b"x").unwrap();
        let mut rd = context_tar(d.path(), &TarOptions::default()).unwrap();
        let mut bytes = Vec::new();
        let err = rd.read_to_end(&mut bytes).await.unwrap_err().to_string();
        assert!(err.contains("packing the build context"), "{err}");
        assert!(err.contains("not valid UTF-8"), "{err}");
    }
}
