//! The sending side of fsutil's DiffCopy: STAT every entry, answer REQ with DATA
//! chunks (several files in flight), FIN after the receiver's FIN.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use buildkit_proto::fsutil::types::Packet;
use buildkit_proto::fsutil::types::packet::PacketType;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::mode;
use super::walk::Walker;
use crate::error::{Error, Result};

/// Bytes per DATA packet.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Files whose data is read and sent at the same time.
pub const FILES_IN_FLIGHT: usize = 4;

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

/// Where packets go; the error type lets the gRPC layer end the stream with a status.
pub(crate) type Outbound = mpsc::Sender<Result<Packet, tonic::Status>>;

fn packet(t: PacketType) -> Packet {
    Packet {
        r#type: t as i32,
        ..Default::default()
    }
}

fn gone() -> Error {
    Error::Transport("the receiver went away".into())
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
    let files: Arc<Mutex<HashMap<u32, PathBuf>>> = Arc::default();

    let walk = {
        let out = out.clone();
        let files = files.clone();
        let stats = stats.clone();
        tokio::task::spawn_blocking(move || {
            let mut id: u32 = 0;
            let res = walker.walk(&mut |entry| {
                if mode::is_regular(entry.stat.mode) {
                    files.lock().expect("lock").insert(id, entry.abs);
                }
                id += 1;
                stats.entries.fetch_add(1, Ordering::Relaxed);
                let mut p = packet(PacketType::PacketStat);
                p.stat = Some(entry.stat);
                out.blocking_send(Ok(p)).map_err(|_| gone())
            });
            match &res {
                Ok(()) => {
                    out.blocking_send(Ok(packet(PacketType::PacketStat)))
                        .map_err(|_| gone())?;
                }
                Err(e) => {
                    let mut p = packet(PacketType::PacketErr);
                    p.data = Bytes::from(e.to_string());
                    let _ = out.blocking_send(Ok(p));
                }
            }
            res
        })
    };

    let (work_tx, work_rx) = std::sync::mpsc::channel::<(u32, PathBuf)>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut workers = Vec::new();
    for _ in 0..FILES_IN_FLIGHT {
        let rx = work_rx.clone();
        let out = out.clone();
        let stats = stats.clone();
        workers.push(tokio::task::spawn_blocking(move || -> Result<()> {
            loop {
                let job = rx.lock().expect("lock").recv();
                let Ok((id, path)) = job else { return Ok(()) };
                send_file(id, &path, &out, &stats)?;
            }
        }));
    }

    let result: Result<()> = async {
        loop {
            let p = match inbound.next().await {
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
                    let path = files.lock().expect("lock").remove(&p.id).ok_or_else(|| {
                        Error::Protocol(format!(
                            "the receiver requested an invalid file id {}",
                            p.id
                        ))
                    })?;
                    work_tx.send((p.id, path)).map_err(|_| gone())?;
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
    if let Err(e) = result {
        // A failed walk is the real cause (the receiver then gives up); otherwise do not
        // wait for tasks that may be blocked on a peer that stopped reading.
        if walk.is_finished()
            && let Ok(Err(walk_err)) = walk.await
        {
            return Err(walk_err);
        }
        return Err(e);
    }
    match walk.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(Error::Transport(format!("walker failed: {e}"))),
    }
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::Transport(format!("file sender failed: {e}"))),
        }
    }
    out.send(Ok(packet(PacketType::PacketFin)))
        .await
        .map_err(|_| gone())?;
    Ok(())
}

/// Sends one file's data, then its empty DATA end marker. A file that cannot be opened
/// (gone, or replaced by something that is not a regular file) is sent empty, as
/// upstream does; it is never followed through a symlink.
fn send_file(id: u32, path: &std::path::Path, out: &Outbound, stats: &SendStats) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    if let Ok(mut file) = file
        && file.metadata().is_ok_and(|m| m.is_file())
    {
        loop {
            let mut buf = vec![0u8; CHUNK_SIZE];
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
            };
            buf.truncate(n);
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let mut p = packet(PacketType::PacketData);
            p.id = id;
            p.data = Bytes::from(buf);
            out.blocking_send(Ok(p)).map_err(|_| gone())?;
        }
    }
    stats.files.fetch_add(1, Ordering::Relaxed);
    let mut p = packet(PacketType::PacketData);
    p.id = id;
    out.blocking_send(Ok(p)).map_err(|_| gone())
}
