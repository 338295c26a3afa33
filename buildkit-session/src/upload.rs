//! `moby.upload.v1.Upload`: byte streams the daemon pulls once, such as a tarball
//! build context given as `context=http://buildkit-session/<id>`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use buildkit_proto::moby::upload::v1::BytesMessage;
use buildkit_proto::moby::upload::v1::upload_server::{Upload as UploadService, UploadServer};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metadata;
use crate::router::{Attachable, Router};

/// Bytes per message (the daemon accepts up to 3 MiB).
const CHUNK: usize = 1024 * 1024;

type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// Streams offered for one pull each, by id.
#[derive(Default, Clone)]
pub struct Upload {
    readers: Arc<Mutex<HashMap<String, Reader>>>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.readers.lock().expect("lock").keys().cloned().collect();
        f.debug_struct("Upload").field("ids", &ids).finish()
    }
}

impl Upload {
    /// Nothing offered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers `reader` under `id`; returns the URL to give the daemon
    /// (`http://buildkit-session/<id>`).
    pub fn add(
        &self,
        id: impl Into<String>,
        reader: impl AsyncRead + Send + Unpin + 'static,
    ) -> String {
        let id = id.into();
        let url = format!("http://buildkit-session/{id}");
        self.readers
            .lock()
            .expect("lock")
            .insert(id, Box::new(reader));
        url
    }
}

impl Attachable for Upload {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(UploadServer::new(*self));
    }
}

#[tonic::async_trait]
impl UploadService for Upload {
    type PullStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn pull(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let path = metadata::first(request.metadata(), "urlpath").unwrap_or_default();
        let id = path.trim_start_matches('/').to_string();
        let Some(mut reader) = self.readers.lock().expect("lock").remove(&id) else {
            return Err(Status::not_found(format!(
                "no upload {path:?} (each upload is pulled once)"
            )));
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match reader.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx
                            .send(Ok(BytesMessage { data: buf.into() }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading upload {id}: {e}"))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
