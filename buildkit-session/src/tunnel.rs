//! The `Control.Session` tunnel: a bidirectional stream of `BytesMessage`s that carries
//! the raw HTTP/2 bytes of a session, for daemons reached over gRPC (standalone
//! buildkitd, or dockerd's Control service).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use buildkit_proto::moby::buildkit::v1::BytesMessage;
use buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;
use tokio_util::sync::PollSender;
use tonic::codegen::{Body, StdError};
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};
use crate::session::{Session, SessionHandle};

/// Messages in flight toward the daemon before writes wait.
const OUTBOUND_QUEUE: usize = 64;

/// Attaches `session` to a daemon through `Control.Session` and serves it there.
///
/// The session headers travel as gRPC metadata (lowercased). Closing or dropping the
/// handle ends the HTTP/2 connection, half-closes the stream (CloseSend) and drains the
/// daemon's side.
pub async fn run_on_control<T>(
    session: Session,
    control: &mut ControlClient<T>,
) -> Result<SessionHandle>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let (out_tx, out_rx) = mpsc::channel::<BytesMessage>(OUTBOUND_QUEUE);
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    *request.metadata_mut() = MetadataMap::from_headers(session.headers()?.into_iter().collect());
    let mut inbound = control
        .session(request)
        .await
        .map_err(|s| Error::Attach(format!("Control.Session: {}", s.message())))?
        .into_inner();

    // A pump task owns the daemon's stream, so that it is drained to its end even after
    // the HTTP/2 server has let go of the reading side.
    let (in_tx, in_rx) = mpsc::channel::<io::Result<Bytes>>(OUTBOUND_QUEUE);
    let pump = tokio::spawn(async move {
        let mut forwarding = true;
        loop {
            let next = if forwarding {
                inbound.next().await
            } else {
                match tokio::time::timeout(Duration::from_secs(10), inbound.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            };
            match next {
                Some(Ok(msg)) => {
                    if forwarding && in_tx.send(Ok(msg.data)).await.is_err() {
                        forwarding = false;
                    }
                }
                Some(Err(status)) => {
                    if forwarding {
                        let _ = in_tx
                            .send(Err(io::Error::other(format!(
                                "Control.Session: {}",
                                status.message()
                            ))))
                            .await;
                    }
                    break;
                }
                None => break,
            }
        }
    });

    let reader = StreamReader::new(ReceiverStream::new(in_rx));
    let writer = MessageWriter {
        tx: PollSender::new(out_tx),
    };
    let mut handle = session.serve(tokio::io::join(reader, writer));
    handle.keep(AbortOnDrop(Some(pump)));
    Ok(handle)
}

/// Lets the pump finish draining on its own, but not forever.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.0.take() else {
            return;
        };
        // Outside a runtime (a handle dropped after `block_on`) there is nothing
        // to drain on.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            task.abort();
            return;
        };
        rt.spawn(async move {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        });
    }
}

/// Writes become `BytesMessage`s on the request stream; shutdown is CloseSend.
struct MessageWriter {
    tx: PollSender<BytesMessage>,
}

impl AsyncWrite for MessageWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        let msg = BytesMessage {
            data: Bytes::copy_from_slice(buf),
        };
        self.tx.send_item(msg).map_err(|_| closed())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the Control.Session stream is closed",
    )
}
