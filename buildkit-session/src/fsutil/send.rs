//! The sending side of fsutil's DiffCopy: STAT every entry, answer REQ with DATA
//! chunks (several files in flight), FIN after the receiver's FIN.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use buildkit_proto::fsutil::types::Packet;
use buildkit_proto::fsutil::types::packet::PacketType;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::mode;
use super::outbound::{Item, Outbound};
use super::walk::Walker;
use crate::error::{Error, Result};

/// Bytes per DATA packet.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Files whose data is read and sent at the same time.
pub const FILES_IN_FLIGHT: usize = 4;

/// Files up to this size are read where their request arrives, without a hand-over
/// to a reader thread: for a page-cached small file the two thread switches cost more
/// than the read (about a quarter of the client's CPU on a 20,000-file context). A
/// small file on a cold disk holds the session for one short read.
const INLINE_READ: u64 = 64 * 1024;

/// STAT packets handed over together.
const STAT_BATCH: usize = 128;

/// Counters of what a sender sent, for progress and tests.
#[derive(Debug, Default)]
pub struct SendStats {
    entries: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl SendStats {
    /// Entries listed (STAT packets).
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Files whose data was requested and sent.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// File data bytes sent.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

fn packet(t: PacketType) -> Packet {
    Packet {
        r#type: t as i32,
        ..Default::default()
    }
}

fn gone() -> Error {
    Error::Transport("the receiver went away".into())
}

/// A regular file the receiver may ask for.
struct Requestable {
    path: PathBuf,
    size: u64,
}

/// Runs the sender until the receiver's FIN has been answered.
pub(crate) async fn send<S, E>(
    walker: Walker,
    mut inbound: S,
    out: Outbound,
    stats: Arc<SendStats>,
) -> Result<()>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: std::fmt::Display,
{
    let files: Arc<Mutex<HashMap<u32, Requestable>>> = Arc::default();

    let walk = {
        let out = out.clone();
        let files = files.clone();
        let stats = stats.clone();
        tokio::task::spawn_blocking(move || {
            let mut id: u32 = 0;
            let mut batch: Vec<Item> = Vec::with_capacity(STAT_BATCH);
            let res = walker.walk(&mut |entry| {
                if mode::is_regular(entry.stat.mode) {
                    files.lock().expect("lock").insert(
                        id,
                        Requestable {
                            path: entry.abs,
                            size: entry.stat.size.max(0) as u64,
                        },
                    );
                }
                id += 1;
                stats.entries.fetch_add(1, Ordering::Relaxed);
                let mut p = packet(PacketType::PacketStat);
                p.stat = Some(entry.stat);
                batch.push(Ok(p));
                if batch.len() >= STAT_BATCH {
                    out.blocking_send(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(STAT_BATCH),
                    ))
                    .map_err(|_| gone())?;
                }
                Ok(())
            });
            match &res {
                Ok(()) => batch.push(Ok(packet(PacketType::PacketStat))),
                Err(e) => {
                    let mut p = packet(PacketType::PacketErr);
                    p.data = Bytes::from(e.to_string());
                    batch.push(Ok(p));
                }
            }
            out.blocking_send(batch).map_err(|_| gone())?;
            res
        })
    };

    let (work_tx, work_rx) = std::sync::mpsc::channel::<(u32, Requestable)>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut workers = Vec::new();
    for _ in 0..FILES_IN_FLIGHT {
        let rx = work_rx.clone();
        let out = out.clone();
        let stats = stats.clone();
        workers.push(tokio::task::spawn_blocking(move || -> Result<()> {
            loop {
                let job = rx.lock().expect("lock").recv();
                let Ok((id, file)) = job else { return Ok(()) };
                send_file(id, &file, &out, &stats)?;
            }
        }));
    }

    let mut walk = walk;
    let mut walked: Option<Result<()>> = None;
    let result: Result<()> = async {
        loop {
            // Watch the walker too: if it fails (or dies) the receiver would wait for
            // the rest of the listing forever.
            let next = tokio::select! {
                r = &mut walk, if walked.is_none() => {
                    match r {
                        Ok(Ok(())) => walked = Some(Ok(())),
                        // The walker sent ERR after the listing it managed.
                        Ok(Err(e)) => return Err(e),
                        Err(e) => {
                            let msg = format!("the directory walk failed: {e}");
                            let mut p = packet(PacketType::PacketErr);
                            p.data = Bytes::from(msg.clone());
                            let _ = out.send(vec![Ok(p)]).await;
                            return Err(Error::Transport(msg));
                        }
                    }
                    continue;
                }
                p = inbound.next() => p,
            };
            let p = match next {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    return Err(Error::Transport(format!(
                        "receiving from the receiver: {e}"
                    )));
                }
                None => {
                    return Err(Error::Protocol(
                        "the receiver ended the stream before FIN".into(),
                    ));
                }
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketReq) => {
                    let file = files.lock().expect("lock").remove(&p.id).ok_or_else(|| {
                        Error::Protocol(format!(
                            "the receiver requested an invalid file id {}",
                            p.id
                        ))
                    })?;
                    if file.size <= INLINE_READ {
                        // At most one chunk: nothing is flushed before the end.
                        let mut early = Vec::new();
                        let mut last = read_file(p.id, &file, &stats, &mut |c| {
                            early.extend(c);
                            Ok(())
                        })?;
                        early.append(&mut last);
                        out.send(early).await.map_err(|_| gone())?;
                    } else {
                        work_tx.send((p.id, file)).map_err(|_| gone())?;
                    }
                }
                Ok(PacketType::PacketFin) => return Ok(()),
                Ok(PacketType::PacketErr) => {
                    return Err(Error::Protocol(format!(
                        "error from receiver: {}",
                        String::from_utf8_lossy(&p.data)
                    )));
                }
                _ => {}
            }
        }
    }
    .await;

    drop(work_tx);
    // Do not wait for tasks that may be blocked on a peer that stopped reading.
    result?;
    if walked.is_none() {
        match walk.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::Transport(format!("the directory walk failed: {e}"))),
        }
    }
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::Transport(format!("file sender failed: {e}"))),
        }
    }
    out.send(vec![Ok(packet(PacketType::PacketFin))])
        .await
        .map_err(|_| gone())?;
    Ok(())
}

/// Reads up to `want` bytes of `f` into `buf`'s spare capacity (not zeroed first:
/// this is the hot path of a large context), stopping early at the end of the file.
fn read_full(f: &mut std::fs::File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want);
    while buf.len() < want {
        let room = want - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..room];
        // SAFETY: `read` writes at most `spare.len()` bytes into memory we own, and only
        // the bytes it reports as written are counted below.
        let n = unsafe { libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if !buf.is_empty() => break,
                _ => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialized exactly `n` more bytes.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(buf.len())
}

/// Sends one file's data, then its empty DATA end marker: the size listed (a file that
/// grew since is cut there; one that shrank ends early), in chunks. A file that cannot
/// be opened (gone, or replaced by something that is not a regular file) is sent
/// empty, as upstream does; it is never followed through a symlink.
fn send_file(id: u32, file: &Requestable, out: &Outbound, stats: &SendStats) -> Result<()> {
    let last = read_file(id, file, stats, &mut |chunk| {
        out.blocking_send(chunk).map_err(|_| gone())
    })?;
    out.blocking_send(last).map_err(|_| gone())
}

/// Reads a file into DATA packets: every full chunk but the last goes to `flush`; the
/// last one and the end marker are returned.
fn read_file(
    id: u32,
    file: &Requestable,
    stats: &SendStats,
    flush: &mut dyn FnMut(Vec<Item>) -> Result<()>,
) -> Result<Vec<Item>> {
    let data = |bytes: Bytes| {
        let mut p = packet(PacketType::PacketData);
        p.id = id;
        p.data = bytes;
        Ok(p)
    };
    let opened = super::open_listed_file(&file.path);
    let mut batch: Vec<Item> = Vec::with_capacity(2);
    if let Ok(mut f) = opened {
        let mut left = file.size as usize;
        while left > 0 {
            let want = left.min(CHUNK_SIZE);
            // One read per chunk: std's read_to_end would start at 8 KiB reads.
            let mut buf = Vec::with_capacity(want);
            let n = match read_full(&mut f, &mut buf, want) {
                Ok(n) => n,
                // A FIFO or device swapped in: send what we have.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(Error::io(format!("reading {}", file.path.display()), e)),
            };
            if n == 0 {
                break;
            }
            left -= n;
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            batch.push(data(Bytes::from(buf)));
            if left > 0 && n == want {
                flush(std::mem::replace(&mut batch, Vec::with_capacity(2)))?;
            } else if n < want {
                // The file shrank: what was there is sent.
                break;
            }
        }
    }
    stats.files.fetch_add(1, Ordering::Relaxed);
    batch.push(data(Bytes::new()));
    Ok(batch)
}
