//! Where a DiffCopy side's packets go: one queue into the gRPC response stream, in the
//! order they were produced (listings and file data interleave as upstream's do; giving
//! data priority starves the receiver of the listings it requests files from). Packets
//! travel in batches, so that a run of STATs, or a small file's data and its end
//! marker, cost one hand-over between threads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use buildkit_proto::fsutil::types::Packet;
use futures_util::Stream;
use tokio::sync::mpsc;

/// A packet, or the status that ends the stream.
pub(crate) type Item = Result<Packet, tonic::Status>;

/// Batches queued before senders wait.
const BATCHES: usize = 64;

/// The sending half; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<Vec<Item>>,
}

/// The other end went away.
#[derive(Debug)]
pub(crate) struct Gone;

impl Outbound {
    /// Queues packets (from a blocking thread).
    pub(crate) fn blocking_send(&self, items: Vec<Item>) -> Result<(), Gone> {
        self.tx.blocking_send(items).map_err(|_| Gone)
    }

    /// Queues packets.
    pub(crate) async fn send(&self, items: Vec<Item>) -> Result<(), Gone> {
        self.tx.send(items).await.map_err(|_| Gone)
    }
}

/// The packets in the order they go out; ends when every [`Outbound`] is dropped.
pub(crate) struct PacketStream {
    rx: mpsc::Receiver<Vec<Item>>,
    buf: VecDeque<Item>,
}

/// A new pair.
pub(crate) fn outbound() -> (Outbound, PacketStream) {
    let (tx, rx) = mpsc::channel(BATCHES);
    (
        Outbound { tx },
        PacketStream {
            rx,
            buf: VecDeque::new(),
        },
    )
}

impl Stream for PacketStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            if let Some(item) = self.buf.pop_front() {
                return Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.buf.extend(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
