//! The session's content store (what the daemon talks to for a local cache), driven
//! through a real gRPC client over an in-memory connection, as the daemon would.

use std::sync::{Arc, Mutex};

use buildkit_proto::containerd::services::content::v1::content_client::ContentClient;
use buildkit_proto::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, InfoRequest, ListContentRequest, ReadContentRequest,
    StatusRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use buildkit_session::content::{KEY_STORE_ID, READ_CHUNK, local_store_id};
use buildkit_session::{ContentStore, Session, SessionHandle};
use futures_util::StreamExt;
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

struct Fixture {
    client: ContentClient<Channel>,
    id: String,
    dir: tempfile::TempDir,
    _session: SessionHandle,
}

/// A session serving one store, and a client connected to it.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let id = local_store_id(dir.path());
    let session = Session::new().attach(ContentStore::new().store(&id, dir.path()));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let handle = session.serve(ours);
    let io = Arc::new(Mutex::new(Some(theirs)));
    let channel = Endpoint::from_static("http://session")
        .connect_with_connector(tower::service_fn(move |_| {
            let io = io.lock().unwrap().take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("connected once"))
            }
        }))
        .await
        .unwrap();
    Fixture {
        client: ContentClient::new(channel)
            .max_decoding_message_size(32 << 20)
            .max_encoding_message_size(32 << 20),
        id,
        dir,
        _session: handle,
    }
}

impl Fixture {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.req_for(&self.id, msg)
    }

    fn req_for<T>(&self, id: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(KEY_STORE_ID, id.parse().unwrap());
        r
    }

    /// Opens a write conversation: requests go in through the sender.
    async fn write(
        &mut self,
    ) -> (
        mpsc::Sender<WriteContentRequest>,
        Result<tonic::Streaming<WriteContentResponse>, tonic::Status>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        let req = self.req(ReceiverStream::new(rx));
        let resp = self.client.write(req).await.map(|r| r.into_inner());
        (tx, resp)
    }

    fn blob(&self, digest: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }
}

fn digest_of(data: &[u8]) -> String {
    let sum = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn stat(reference: &str, total: i64, expected: &str) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.into(),
        total,
        expected: expected.into(),
        ..Default::default()
    }
}

fn write_at(offset: i64, data: &[u8]) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Write as i32,
        offset,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn commit(offset: i64, total: i64, expected: &str) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Commit as i32,
        offset,
        total,
        expected: expected.into(),
        ..Default::default()
    }
}

/// Sends `req` and waits for its answer.
async fn send(
    tx: &mpsc::Sender<WriteContentRequest>,
    rx: &mut tonic::Streaming<WriteContentResponse>,
    req: WriteContentRequest,
) -> Result<WriteContentResponse, tonic::Status> {
    tx.send(req).await.unwrap();
    match rx.next().await {
        Some(r) => r,
        None => Err(tonic::Status::unknown("the stream ended")),
    }
}

async fn read_all(f: &mut Fixture, digest: &str, offset: i64, size: i64) -> (Vec<u8>, Vec<i64>) {
    let req = f.req(ReadContentRequest {
        digest: digest.into(),
        offset,
        size,
    });
    let mut stream = f.client.read(req).await.unwrap().into_inner();
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    while let Some(msg) = stream.next().await {
        let msg = msg.unwrap();
        assert!(msg.data.len() <= READ_CHUNK);
        offsets.push(msg.offset);
        data.extend_from_slice(&msg.data);
    }
    (data, offsets)
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_verified_committed_and_read_back_in_chunks() {
    let mut f = fixture().await;
    let blob: Vec<u8> = (0..(5 * READ_CHUNK / 2)).map(|i| (i % 251) as u8).collect();
    let digest = digest_of(&blob);
    let total = blob.len() as i64;

    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    let r = send(&tx, &mut rx, stat("layer-1", total, &digest))
        .await
        .unwrap();
    assert_eq!((r.offset, r.total), (0, total));
    let (a, b) = blob.split_at(1000);
    let r = send(&tx, &mut rx, write_at(0, a)).await.unwrap();
    assert_eq!(r.offset, 1000);
    assert_eq!(r.digest, digest_of(a), "the digest so far");
    let r = send(&tx, &mut rx, write_at(1000, b)).await.unwrap();
    assert_eq!(r.offset, total);
    let r = send(&tx, &mut rx, commit(total, total, &digest))
        .await
        .unwrap();
    assert_eq!((r.offset, r.digest.as_str()), (total, digest.as_str()));
    drop(tx);

    assert_eq!(std::fs::read(f.blob(&digest)).unwrap(), blob);
    let ingest = std::fs::read_dir(f.dir.path().join("ingest"))
        .unwrap()
        .count();
    assert_eq!(ingest, 0, "the ingest directory is cleaned up");

    let info = f
        .client
        .info(f.req(InfoRequest {
            digest: digest.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.size, total);

    let (all, offsets) = read_all(&mut f, &digest, 0, 0).await;
    assert_eq!(all, blob);
    assert!(offsets.len() >= 3, "streamed in chunks: {offsets:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    let (part, _) = read_all(&mut f, &digest, 10, 20).await;
    assert_eq!(part, &blob[10..30]);
    let (tail, _) = read_all(&mut f, &digest, total - 5, 100).await;
    assert_eq!(tail, &blob[blob.len() - 5..]);
    // A size that would overflow offset + size still means "the rest".
    let (rest, _) = read_all(&mut f, &digest, 7, i64::MAX).await;
    assert_eq!(rest, &blob[7..]);

    let err = f
        .client
        .read(f.req(ReadContentRequest {
            digest: digest.clone(),
            offset: total + 1,
            size: 0,
        }))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::OutOfRange);

    let listed: Vec<String> = f
        .client
        .list(f.req(ListContentRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .flat_map(|r| futures_util::stream::iter(r.unwrap().info))
        .map(|i| i.digest)
        .collect()
        .await;
    assert_eq!(listed, vec![digest.clone()]);

    f.client
        .delete(f.req(DeleteContentRequest {
            digest: digest.clone(),
        }))
        .await
        .unwrap();
    assert!(!f.blob(&digest).exists());
    let err = f
        .client
        .info(f.req(InfoRequest { digest }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_digest_or_size_is_not_committed() {
    let mut f = fixture().await;
    let data = b"the real content";
    let claimed = digest_of(b"something else");

    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    send(&tx, &mut rx, stat("bad-digest", 0, "")).await.unwrap();
    send(&tx, &mut rx, write_at(0, data)).await.unwrap();
    let err = send(&tx, &mut rx, commit(data.len() as i64, 0, &claimed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("unexpected commit digest"), "{err}");
    assert!(!f.blob(&claimed).exists());
    assert!(!f.blob(&digest_of(data)).exists());

    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    send(&tx, &mut rx, stat("bad-size", 0, "")).await.unwrap();
    send(&tx, &mut rx, write_at(0, data)).await.unwrap();
    let err = send(&tx, &mut rx, commit(data.len() as i64, 99, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("unexpected commit size"), "{err}");
    assert!(!f.blob(&digest_of(data)).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_write_resumes_and_existing_content_is_reported() {
    let mut f = fixture().await;
    let blob = b"0123456789abcdefghij".repeat(1000);
    let digest = digest_of(&blob);
    let total = blob.len() as i64;
    let half = blob.len() / 2;

    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    send(&tx, &mut rx, stat("resumable", total, &digest))
        .await
        .unwrap();
    send(&tx, &mut rx, write_at(0, &blob[..half]))
        .await
        .unwrap();
    // A second writer for the same ref is refused while the first is open.
    let (tx2, rx2) = f.write().await;
    let mut rx2 = rx2.unwrap();
    let err = send(&tx2, &mut rx2, stat("resumable", total, &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    drop(tx);
    drop(rx);

    // The ref is released once the first conversation ends.
    let mut status = None;
    for _ in 0..100 {
        let s = f
            .client
            .status(f.req(StatusRequest {
                r#ref: "resumable".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let (tx, rx) = f.write().await;
        let mut rx = rx.unwrap();
        match send(&tx, &mut rx, stat("resumable", total, &digest)).await {
            Ok(r) => {
                status = Some((s, r, tx, rx));
                break;
            }
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (s, r, tx, mut rx) = status.expect("the ref was released");
    assert_eq!((s.offset, s.total), (half as i64, total));
    assert_eq!(r.offset, half as i64, "the write resumes where it stopped");
    assert_eq!(r.digest, digest_of(&blob[..half]));
    send(&tx, &mut rx, write_at(half as i64, &blob[half..]))
        .await
        .unwrap();
    let r = send(&tx, &mut rx, commit(total, total, &digest))
        .await
        .unwrap();
    assert_eq!(r.digest, digest);
    assert_eq!(std::fs::read(f.blob(&digest)).unwrap(), blob);

    // Writing content the store has: AlreadyExists, which the daemon takes as done.
    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    let err = send(&tx, &mut rx, stat("again", total, &digest))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    // An abandoned write can be aborted.
    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    send(&tx, &mut rx, stat("abandoned", 0, "")).await.unwrap();
    send(&tx, &mut rx, write_at(0, b"partial")).await.unwrap();
    drop(tx);
    drop(rx);
    let mut aborted = false;
    for _ in 0..100 {
        let res = f
            .client
            .abort(f.req(AbortRequest {
                r#ref: "abandoned".into(),
            }))
            .await;
        if res.is_ok() {
            aborted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(aborted);
    let err = f
        .client
        .status(f.req(StatusRequest {
            r#ref: "abandoned".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_digests_and_unknown_stores_are_refused() {
    let mut f = fixture().await;
    for bad in [
        "sha256:../../../etc/passwd".to_string(),
        format!("sha512:{}", "a".repeat(128)),
        "latest".to_string(),
    ] {
        let err = f
            .client
            .info(f.req(InfoRequest {
                digest: bad.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        let err = f
            .client
            .read(f.req(ReadContentRequest {
                digest: bad.clone(),
                ..Default::default()
            }))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
    }
    let (tx, rx) = f.write().await;
    let mut rx = rx.unwrap();
    let err = send(&tx, &mut rx, stat("r", 0, "sha256:nothex"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let digest = digest_of(b"x");
    let req = f.req_for(
        "local:/somewhere/else",
        InfoRequest {
            digest: digest.clone(),
        },
    );
    let err = f.client.info(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("unknown content store"), "{err}");
    let err = f
        .client
        .info(tonic::Request::new(InfoRequest { digest }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains(KEY_STORE_ID), "{err}");
}
