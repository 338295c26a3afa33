//! `moby.filesync.v1.FileSend`: receives exporter output from the daemon.
//!
//! One method carries two protocols, chosen by the exporter: file targets (`tar`,
//! `oci`, `docker`) get a stream of `BytesMessage` chunks to append; directory targets
//! (`local`) get an fsutil DiffCopy with the roles reversed. The method is registered
//! with a raw codec and each call decoded for its target, picked by the
//! `buildkit-attachable-exporter-id` metadata (the exporter's index in the request).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use buildkit_proto::fsutil::types::Packet;
use buildkit_proto::moby::filesync::v1::BytesMessage;
use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use prost::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};

use crate::fsutil::{self, ReceiveSummary};
use crate::metadata;
use crate::router::{Attachable, Router};

/// Metadata key: which exporter (index in the solve request) a call is for.
pub const KEY_EXPORTER_ID: &str = "buildkit-attachable-exporter-id";
/// Metadata key prefix for exporter response metadata.
pub const KEY_EXPORTER_META_PREFIX: &str = "exporter-md-";

/// Where one exporter's output goes.
pub enum FileSendTarget {
    /// Append the bytes to a writer (shut down at the end).
    Writer(Box<dyn AsyncWrite + Send + Unpin>),
    /// Write the bytes to a new file at this path (replacing any).
    File(PathBuf),
    /// Receive a directory tree into this path (fsutil DiffCopy).
    Directory(PathBuf),
}

impl std::fmt::Debug for FileSendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Writer(_) => f.write_str("Writer(..)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Directory(p) => f.debug_tuple("Directory").field(p).finish(),
        }
    }
}

/// What a finished transfer delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Bytes written (file data for directories).
    pub bytes: u64,
    /// Entries created, for directory targets.
    pub entries: u64,
    /// The `exporter-md-*` metadata the daemon sent with the call.
    pub metadata: BTreeMap<String, String>,
}

/// Resolves when the daemon has finished sending one exporter's output.
#[derive(Debug)]
pub struct Transfer {
    exporter: u64,
    rx: oneshot::Receiver<Result<Delivered, String>>,
}

impl Future for Transfer {
    type Output = crate::Result<Delivered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let exporter = self.exporter;
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(crate::Error::Protocol(format!(
                "receiving exporter {exporter}'s output: {e}"
            ))),
            Err(_) => Err(crate::Error::Protocol(format!(
                "the daemon sent nothing for exporter {exporter} before the session ended"
            ))),
        })
    }
}

type Pending = (FileSendTarget, oneshot::Sender<Result<Delivered, String>>);

/// Receivers for exporter output, by exporter index.
#[derive(Debug, Default)]
pub struct FileSend {
    targets: HashMap<u64, PendingDebug>,
}

struct PendingDebug(Pending);

impl std::fmt::Debug for PendingDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.0.fmt(f)
    }
}

impl FileSend {
    /// No targets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends exporter `index`'s output to `target`; the returned [`Transfer`] resolves
    /// when it is complete.
    pub fn target(&mut self, index: u64, target: FileSendTarget) -> Transfer {
        let (tx, rx) = oneshot::channel();
        self.targets.insert(index, PendingDebug((target, tx)));
        Transfer {
            exporter: index,
            rx,
        }
    }

    /// True when no target was added.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

impl Attachable for FileSend {
    fn register(self: Box<Self>, router: &mut Router) {
        let targets = self.targets.into_iter().map(|(k, v)| (k, v.0)).collect();
        router.add_service(FileSendService {
            targets: Arc::new(Mutex::new(targets)),
        });
    }
}

#[derive(Clone)]
struct FileSendService {
    targets: Arc<Mutex<HashMap<u64, Pending>>>,
}

impl NamedService for FileSendService {
    const NAME: &'static str = "moby.filesync.v1.FileSend";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> tower::Service<http::Request<B>> for FileSendService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/moby.filesync.v1.FileSend/DiffCopy" {
            let path = req.uri().path().to_string();
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("{path} is not served")).into_http())
            });
        }
        let method = DiffCopy(self.targets.clone());
        Box::pin(async move {
            let mut grpc =
                Grpc::new(RawCodec).apply_max_message_size_config(Some(64 << 20), Some(64 << 20));
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct DiffCopy(Arc<Mutex<HashMap<u64, Pending>>>);

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl StreamingService<Bytes> for DiffCopy {
    type Response = Bytes;
    type ResponseStream = ByteStream;
    type Future = BoxFuture<Result<tonic::Response<ByteStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let targets = self.0.clone();
        Box::pin(async move {
            let md = request.metadata();
            let id: u64 = metadata::first(md, KEY_EXPORTER_ID)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut meta = BTreeMap::new();
            for kv in md.iter() {
                if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv
                    && let Some(name) = k.as_str().strip_prefix(KEY_EXPORTER_META_PREFIX)
                {
                    let v = v.to_str().unwrap_or_default().to_string();
                    meta.entry(name.to_string())
                        .and_modify(|old: &mut String| {
                            old.push(',');
                            old.push_str(&v)
                        })
                        .or_insert(v);
                }
            }
            let Some((target, done)) = targets.lock().expect("lock").remove(&id) else {
                return Err(Status::not_found(format!("exporter {id} not found")));
            };
            let inbound = request.into_inner();
            let stream: ByteStream = match target {
                FileSendTarget::Directory(dest) => receive_dir(dest, inbound, meta, done),
                FileSendTarget::File(path) => match tokio::fs::File::create(&path).await {
                    Ok(file) => receive_bytes(Box::new(file), inbound, meta, done),
                    Err(e) => {
                        let msg = format!("creating {}: {e}", path.display());
                        let _ = done.send(Err(msg.clone()));
                        return Err(Status::internal(msg));
                    }
                },
                FileSendTarget::Writer(w) => receive_bytes(w, inbound, meta, done),
            };
            Ok(tonic::Response::new(stream))
        })
    }
}

/// Appends every BytesMessage to the writer; the response ends when all is written.
fn receive_bytes(
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    mut inbound: Streaming<Bytes>,
    metadata: BTreeMap<String, String>,
    done: oneshot::Sender<Result<Delivered, String>>,
) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Status>>(1);
    tokio::spawn(async move {
        let res: Result<u64, String> = async {
            let mut total = 0u64;
            while let Some(msg) = inbound.next().await {
                let raw =
                    msg.map_err(|s| format!("the daemon's stream failed: {}", s.message()))?;
                let msg = BytesMessage::decode(raw)
                    .map_err(|e| format!("malformed BytesMessage: {e}"))?;
                writer
                    .write_all(&msg.data)
                    .await
                    .map_err(|e| format!("writing the output: {e}"))?;
                total += msg.data.len() as u64;
            }
            writer
                .shutdown()
                .await
                .map_err(|e| format!("finishing the output: {e}"))?;
            Ok(total)
        }
        .await;
        match res {
            Ok(bytes) => {
                let _ = done.send(Ok(Delivered {
                    bytes,
                    entries: 0,
                    metadata,
                }));
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.clone()))).await;
                let _ = done.send(Err(e));
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Runs the fsutil receiver on the call: the daemon sends STAT/DATA, we answer REQ/FIN.
fn receive_dir(
    dest: PathBuf,
    inbound: Streaming<Bytes>,
    metadata: BTreeMap<String, String>,
    done: oneshot::Sender<Result<Delivered, String>>,
) -> ByteStream {
    let packets = inbound.map(|r| {
        let raw = r?;
        Packet::decode(raw)
            .map_err(|e| Status::invalid_argument(format!("malformed fsutil packet: {e}")))
    });
    let (tx, out) = fsutil::outbound();
    let err_tx = tx.clone();
    tokio::spawn(async move {
        match fsutil::receive(&dest, packets, tx).await {
            Ok(ReceiveSummary { entries, bytes }) => {
                let _ = done.send(Ok(Delivered {
                    bytes,
                    entries,
                    metadata,
                }));
            }
            Err(e) => {
                let _ = err_tx
                    .send(vec![Err(Status::from(crate::Error::Protocol(
                        e.to_string(),
                    )))])
                    .await;
                let _ = done.send(Err(e.to_string()));
            }
        }
    });
    Box::pin(out.map(|r| r.map(|p| Bytes::from(p.encode_to_vec()))))
}

/// Passes message bytes through undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
