//! Where a DiffCopy side's packets go: two lanes into one gRPC response stream. File
//! data has priority over listings and control packets, so that a requested file is
//! not stuck behind thousands of queued STATs; packets travel in batches, so that a
//! small file's data and its end marker cost one hand-over between threads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use buildkit_proto::fsutil::types::Packet;
use futures_util::Stream;
use tokio::sync::mpsc;

/// A packet, or the status that ends the stream.
pub(crate) type Item = Result<Packet, tonic::Status>;

/// Batches queued per lane before senders wait.
const META_BATCHES: usize = 64;
const DATA_BATCHES: usize = 16;

/// The sending half; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbound {
    meta: mpsc::Sender<Vec<Item>>,
    data: mpsc::Sender<Vec<Item>>,
}

/// The other end went away.
#[derive(Debug)]
pub(crate) struct Gone;

impl Outbound {
    /// Queues listing or control packets (from a blocking thread).
    pub(crate) fn blocking_meta(&self, items: Vec<Item>) -> Result<(), Gone> {
        self.meta.blocking_send(items).map_err(|_| Gone)
    }

    /// Queues file data (from a blocking thread).
    pub(crate) fn blocking_data(&self, items: Vec<Item>) -> Result<(), Gone> {
        self.data.blocking_send(items).map_err(|_| Gone)
    }

    /// Queues listing or control packets.
    pub(crate) async fn meta(&self, items: Vec<Item>) -> Result<(), Gone> {
        self.meta.send(items).await.map_err(|_| Gone)
    }
}

/// The packets in the order they go out; ends when every [`Outbound`] is dropped.
pub(crate) struct PacketStream {
    meta: mpsc::Receiver<Vec<Item>>,
    data: mpsc::Receiver<Vec<Item>>,
    buf: VecDeque<Item>,
    meta_done: bool,
    data_done: bool,
}

/// A new pair.
pub(crate) fn outbound() -> (Outbound, PacketStream) {
    let (meta_tx, meta_rx) = mpsc::channel(META_BATCHES);
    let (data_tx, data_rx) = mpsc::channel(DATA_BATCHES);
    (
        Outbound {
            meta: meta_tx,
            data: data_tx,
        },
        PacketStream {
            meta: meta_rx,
            data: data_rx,
            buf: VecDeque::new(),
            meta_done: false,
            data_done: false,
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
            if !self.data_done {
                match self.data.poll_recv(cx) {
                    Poll::Ready(Some(batch)) => {
                        self.buf.extend(batch);
                        continue;
                    }
                    Poll::Ready(None) => self.data_done = true,
                    Poll::Pending => {}
                }
            }
            if !self.meta_done {
                match self.meta.poll_recv(cx) {
                    Poll::Ready(Some(batch)) => {
                        self.buf.extend(batch);
                        continue;
                    }
                    Poll::Ready(None) => self.meta_done = true,
                    Poll::Pending => {}
                }
            }
            if self.meta_done && self.data_done {
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
    }
}
