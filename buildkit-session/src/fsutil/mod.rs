//! fsutil's DiffCopy protocol, both directions: the sender that serves local
//! directories (FileSync) and the receiver that writes a daemon's export into a local
//! directory (FileSend directory targets).

pub mod mode;
mod outbound;
mod receive;
mod send;
pub mod walk;

use std::path::Path;

use buildkit_proto::fsutil::types::Packet;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

pub(crate) use outbound::{Outbound, outbound};
pub use receive::ReceiveSummary;
pub use send::{CHUNK_SIZE, FILES_IN_FLIGHT, SendStats};
pub use walk::{Entry, WalkOptions, Walker};

use crate::error::{Error, Result};

/// Opens a file the walker listed, for reading its data: never through a symlink
/// planted at its name since, and never blocking on a FIFO swapped in.
pub(crate) fn open_listed_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Sends the directory `walker` walks to a receiver: `inbound` carries the receiver's
/// packets (REQ, FIN), `outbound` takes ours.
pub(crate) async fn send<S, E>(
    walker: Walker,
    inbound: S,
    outbound: Outbound,
    stats: std::sync::Arc<SendStats>,
) -> Result<()>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: std::fmt::Display,
{
    send::send(walker, inbound, outbound, stats).await
}

/// Receives a directory into `dest` from a sender: `inbound` carries its packets
/// (STAT, DATA, FIN), `outbound` takes ours (REQ, FIN).
pub(crate) async fn receive<S, E>(
    dest: &Path,
    mut inbound: S,
    outbound: Outbound,
) -> Result<ReceiveSummary>
where
    S: Stream<Item = Result<Packet, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let receiver = receive::Receiver::new(dest)?;
    let (tx, mut rx) = mpsc::channel::<Result<Packet>>(64);
    let pump = tokio::spawn(async move {
        while let Some(p) = inbound.next().await {
            let p = p.map_err(|e| Error::Transport(format!("receiving from the sender: {e}")));
            if tx.send(p).await.is_err() {
                break;
            }
        }
    });
    let res = tokio::task::spawn_blocking(move || receiver.run(&mut rx, &outbound))
        .await
        .map_err(|e| Error::Transport(format!("receiver failed: {e}")))?;
    pump.abort();
    res
}

#[cfg(test)]
mod tests;
