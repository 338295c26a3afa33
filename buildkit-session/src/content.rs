//! `containerd.services.content.v1.Content`: local directories served to the daemon as
//! content stores, for the `local` cache backend.
//!
//! For a local cache export (`dest=DIR`) or import (`src=DIR`) the daemon reads and
//! writes blobs of an OCI image layout in `DIR` through the session. Each call names
//! its store in the gRPC metadata `buildkit-attachable-store-id` (`local:DIR`, see
//! [`local_store_id`]); one [`ContentStore`] attachable serves every store of a
//! session.
//!
//! The layout is containerd's local store: committed blobs in `blobs/sha256/<hex>`,
//! writes in progress in `ingest/<sha256 of the ref>/` (`data`, `ref`, `total`,
//! `startedat`, `updatedat`), so an interrupted write resumes where it stopped. A
//! commit checks size and digest before the blob is renamed into place. Only
//! `sha256:<64 hex>` digests are accepted, refs never become paths, blobs that are
//! symlinks are not followed, and reads stream in chunks of [`READ_CHUNK`] bytes.
//!
//! ```no_run
//! use buildkit_session::{ContentStore, Session, content::local_store_id};
//!
//! let dir = std::path::Path::new("/tmp/cache");
//! let session = Session::new().attach(ContentStore::new().store(local_store_id(dir), dir));
//! # let _ = session;
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use buildkit_proto::containerd::services::content::v1::content_server::{Content, ContentServer};
use buildkit_proto::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest,
    ListContentResponse, ListStatusesRequest, ListStatusesResponse, ReadContentRequest,
    ReadContentResponse, Status as IngestStatus, StatusRequest, StatusResponse, UpdateRequest,
    UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use buildkit_proto::prost_types::Timestamp;
use futures_util::Stream;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metadata;
use crate::router::{Attachable, Router};

/// Metadata key: which store a call is for (`local:<dir>`).
pub const KEY_STORE_ID: &str = "buildkit-attachable-store-id";

/// The most bytes sent in one `Read` response.
pub const READ_CHUNK: usize = 1 << 20;

/// The largest message accepted or sent (the daemon writes in chunks of up to 8 MiB).
const MAX_MESSAGE: usize = 32 << 20;

/// The id BuildKit gives the store of a local cache directory: `local:` and the
/// directory exactly as it is sent in the cache's `dest` or `src` attr.
pub fn local_store_id(dir: &Path) -> String {
    format!("local:{}", dir.to_string_lossy())
}

/// Local directories served to the daemon as containerd content stores, by store id.
///
/// ```
/// use buildkit_session::ContentStore;
/// let stores = ContentStore::new().store("local:/tmp/cache", "/tmp/cache");
/// assert_eq!(stores.ids().collect::<Vec<_>>(), ["local:/tmp/cache"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ContentStore {
    stores: BTreeMap<String, PathBuf>,
}

impl ContentStore {
    /// No stores yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `dir` as the store `id` (created on the first write if missing).
    pub fn store(mut self, id: impl Into<String>, dir: impl AsRef<Path>) -> Self {
        self.add(id, dir);
        self
    }

    /// Serves `dir` as the store `id`; a second directory for the same id replaces
    /// the first.
    pub fn add(&mut self, id: impl Into<String>, dir: impl AsRef<Path>) -> &mut Self {
        self.stores.insert(id.into(), dir.as_ref().to_path_buf());
        self
    }

    /// The store ids served.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// True when no store was added.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }
}

impl Attachable for ContentStore {
    fn register(self: Box<Self>, router: &mut Router) {
        let stores = self
            .stores
            .into_iter()
            .map(|(id, root)| (id, Arc::new(Store::new(root))))
            .collect();
        router.add_service(
            ContentServer::new(Service {
                stores: Arc::new(stores),
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        );
    }
}

struct Service {
    stores: Arc<BTreeMap<String, Arc<Store>>>,
}

impl Service {
    fn choose<T>(&self, req: &Request<T>) -> Result<Arc<Store>, Status> {
        let id = metadata::first(req.metadata(), KEY_STORE_ID).ok_or_else(|| {
            Status::invalid_argument(format!("request lacks metadata {KEY_STORE_ID:?}"))
        })?;
        self.stores
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unknown content store {id}")))
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest.
fn parse_digest(digest: &str) -> Result<&str, Status> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(Status::invalid_argument(format!(
            "{digest:?} is not a sha256 digest (sha256:<64 lowercase hex digits>)"
        ))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_status(what: impl std::fmt::Display, e: std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(format!("{what}: {e}")),
        _ => Status::internal(format!("{what}: {e}")),
    }
}

fn no_filters(filters: &[String]) -> Result<(), Status> {
    if filters.iter().all(|f| f.is_empty()) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this content store lists without filters, got {filters:?}"
        )))
    }
}

fn write_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn read_time(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// One directory in containerd's local store layout.
struct Store {
    root: PathBuf,
    /// Refs with an open writer: a second writer for the same ref is refused.
    writing: Mutex<HashSet<String>>,
}

impl Store {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            writing: Mutex::new(HashSet::new()),
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, Status> {
        Ok(self.root.join("blobs/sha256").join(parse_digest(digest)?))
    }

    /// Refs are arbitrary strings: the ingest directory is named by their sha256.
    fn ingest_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(hex(&Sha256::digest(reference.as_bytes())))
    }

    /// A committed blob's metadata; symlinks and other non-files are not blobs.
    async fn blob_meta(&self, digest: &str) -> Result<std::fs::Metadata, Status> {
        let path = self.blob_path(digest)?;
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_file() => Ok(m),
            Ok(_) => Err(Status::not_found(format!(
                "content {digest}: {} is not a regular file",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Status::not_found(format!("content {digest}: not found")))
            }
            Err(e) => Err(io_status(format_args!("content {digest}"), e)),
        }
    }

    fn info(digest: String, meta: &std::fs::Metadata) -> Info {
        Info {
            digest,
            size: meta.len() as i64,
            created_at: meta.modified().ok().map(Timestamp::from),
            updated_at: meta.accessed().ok().map(Timestamp::from),
            labels: BTreeMap::new(),
        }
    }

    async fn list(&self) -> Result<Vec<Info>, Status> {
        let dir = self.root.join("blobs/sha256");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_status(dir.display(), e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_status(dir.display(), e))?
        {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if parse_digest(&digest).is_err() {
                continue;
            }
            if let Ok(meta) = self.blob_meta(&digest).await {
                out.push(Self::info(digest, &meta));
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn status(&self, reference: &str) -> Result<IngestStatus, Status> {
        let dir = self.ingest_path(reference);
        let stored = tokio::fs::read_to_string(dir.join("ref"))
            .await
            .map_err(|e| io_status(format_args!("ingest ref {reference:?}"), e))?;
        if stored != reference {
            return Err(Status::not_found(format!(
                "ingest ref {reference:?}: the ingest directory holds {stored:?}"
            )));
        }
        let offset = tokio::fs::metadata(dir.join("data"))
            .await
            .map_err(|e| io_status(format_args!("ingest ref {reference:?}"), e))?
            .len() as i64;
        let total = tokio::fs::read_to_string(dir.join("total"))
            .await
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let time = |name: &'static str| {
            let path = dir.join(name);
            async move {
                tokio::fs::read_to_string(path)
                    .await
                    .ok()
                    .and_then(|s| read_time(&s))
                    .map(Timestamp::from)
            }
        };
        Ok(IngestStatus {
            started_at: time("startedat").await,
            updated_at: time("updatedat").await,
            r#ref: reference.to_string(),
            offset,
            total,
            expected: String::new(),
        })
    }

    async fn list_statuses(&self) -> Result<Vec<IngestStatus>, Status> {
        let dir = self.root.join("ingest");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_status(dir.display(), e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_status(dir.display(), e))?
        {
            let Ok(reference) = tokio::fs::read_to_string(entry.path().join("ref")).await else {
                continue;
            };
            if let Ok(s) = self.status(&reference).await {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(out)
    }

    async fn abort(&self, reference: &str) -> Result<(), Status> {
        let dir = self.ingest_path(reference);
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|e| io_status(format_args!("ingest ref {reference:?}"), e))
    }

    /// Streams `size` bytes from `offset` (the rest of the blob when `size` is 0).
    async fn read(
        &self,
        req: ReadContentRequest,
    ) -> Result<mpsc::Receiver<Result<ReadContentResponse, Status>>, Status> {
        let meta = self.blob_meta(&req.digest).await?;
        let len = meta.len() as i64;
        let offset = req.offset.max(0);
        if offset > len {
            return Err(Status::out_of_range(format!(
                "read at {offset} is past the end of {} ({len} bytes)",
                req.digest
            )));
        }
        let size = if req.size <= 0 || req.size > len - offset {
            len - offset
        } else {
            req.size
        };
        let path = self.blob_path(&req.digest)?;
        let mut file = open_no_follow(&path)
            .await
            .map_err(|e| io_status(format_args!("content {}", req.digest), e))?;
        file.seek(SeekFrom::Start(offset as u64))
            .await
            .map_err(|e| io_status(format_args!("content {}", req.digest), e))?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut at = offset;
            let mut left = size as u64;
            while left > 0 {
                let mut buf = vec![0u8; left.min(READ_CHUNK as u64) as usize];
                let res = match file.read(&mut buf).await {
                    Ok(0) => Err(Status::data_loss(format!(
                        "{} ended at {at}, before the {len} bytes it had",
                        path.display()
                    ))),
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        let msg = ReadContentResponse {
                            offset: at,
                            data: buf.into(),
                        };
                        at += n as i64;
                        Ok(msg)
                    }
                    Err(e) => Err(io_status(path.display(), e)),
                };
                let failed = res.is_err();
                if tx.send(res).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

async fn open_no_follow(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true).custom_flags(libc::O_NOFOLLOW);
    opts.open(path).await
}

/// One write transaction on a ref. Dropping it releases the ref.
struct Writer {
    store: Arc<Store>,
    reference: String,
    dir: PathBuf,
    file: Option<tokio::fs::File>,
    offset: i64,
    total: i64,
    hasher: Sha256,
    started: SystemTime,
    updated: SystemTime,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut w) = self.store.writing.lock() {
            w.remove(&self.reference);
        }
    }
}

impl Writer {
    /// Starts, or resumes, the write of `reference`.
    async fn open(
        store: Arc<Store>,
        reference: &str,
        total: i64,
        expected: &str,
    ) -> Result<Self, Status> {
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "the first write message must have a reference",
            ));
        }
        if !store
            .writing
            .lock()
            .expect("lock")
            .insert(reference.to_string())
        {
            return Err(Status::unavailable(format!(
                "ref {reference:?} is locked by another writer"
            )));
        }
        let now = SystemTime::now();
        let mut w = Self {
            dir: store.ingest_path(reference),
            store,
            reference: reference.to_string(),
            file: None,
            offset: 0,
            total,
            hasher: Sha256::new(),
            started: now,
            updated: now,
        };
        if !expected.is_empty() && w.store.blob_meta(expected).await.is_ok() {
            return Err(Status::already_exists(format!("content {expected}")));
        }
        let ingest = w.store.root.join("ingest");
        tokio::fs::create_dir_all(&ingest)
            .await
            .map_err(|e| io_status(ingest.display(), e))?;
        let resumed = match tokio::fs::create_dir(&w.dir).await {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => w.resume(total).await,
            Err(e) => return Err(io_status(w.dir.display(), e)),
        };
        if !resumed {
            w.start_fresh().await?;
        }
        let data = w.dir.join("data");
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&data)
            .await
            .map_err(|e| io_status(data.display(), e))?;
        file.seek(SeekFrom::Start(w.offset as u64))
            .await
            .map_err(|e| io_status(data.display(), e))?;
        w.file = Some(file);
        Ok(w)
    }

    /// Picks up an interrupted write: hashes what was written so far.
    async fn resume(&mut self, total: i64) -> bool {
        let Ok(status) = self.store.status(&self.reference).await else {
            return false;
        };
        if total > 0 && status.total > 0 && total != status.total {
            return false;
        }
        let Ok(mut data) = open_no_follow(&self.dir.join("data")).await else {
            return false;
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut offset = 0i64;
        loop {
            match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    offset += n as i64;
                }
                Err(_) => return false,
            }
        }
        self.hasher = hasher;
        self.offset = offset;
        if status.total > 0 {
            self.total = status.total;
        }
        let to_time = |t: Option<Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
        self.started = to_time(status.started_at).unwrap_or(self.started);
        self.updated = to_time(status.updated_at).unwrap_or(self.updated);
        true
    }

    async fn start_fresh(&mut self) -> Result<(), Status> {
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        let fail = |e: std::io::Error| io_status(self.dir.display(), e);
        tokio::fs::create_dir_all(&self.dir).await.map_err(fail)?;
        tokio::fs::write(self.dir.join("ref"), &self.reference)
            .await
            .map_err(fail)?;
        let now = write_time(self.started);
        tokio::fs::write(self.dir.join("startedat"), &now)
            .await
            .map_err(fail)?;
        tokio::fs::write(self.dir.join("updatedat"), &now)
            .await
            .map_err(fail)?;
        if self.total > 0 {
            tokio::fs::write(self.dir.join("total"), self.total.to_string())
                .await
                .map_err(fail)?;
        }
        self.offset = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }

    fn file(&mut self) -> Result<&mut tokio::fs::File, Status> {
        self.file
            .as_mut()
            .ok_or_else(|| Status::failed_precondition("the write was already committed"))
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Status> {
        let dir = self.dir.clone();
        self.file()?
            .write_all(data)
            .await
            .map_err(|e| io_status(dir.display(), e))?;
        self.hasher.update(data);
        self.offset += data.len() as i64;
        self.updated = SystemTime::now();
        Ok(())
    }

    async fn truncate(&mut self) -> Result<(), Status> {
        let dir = self.dir.clone();
        let file = self.file()?;
        file.set_len(0)
            .await
            .map_err(|e| io_status(dir.display(), e))?;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(|e| io_status(dir.display(), e))?;
        self.offset = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    /// Checks size and digest, then moves the data into `blobs/sha256/`.
    async fn commit(&mut self, total: i64, expected: &str) -> Result<String, Status> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Status::failed_precondition("the write was already committed"))?;
        let data = self.dir.join("data");
        file.flush()
            .await
            .map_err(|e| io_status(data.display(), e))?;
        file.sync_all()
            .await
            .map_err(|e| io_status(data.display(), e))?;
        drop(file);
        if total > 0 && total != self.offset {
            return Err(Status::failed_precondition(format!(
                "unexpected commit size {}, expected {total}",
                self.offset
            )));
        }
        let actual = self.digest();
        if !expected.is_empty() && expected != actual {
            return Err(Status::failed_precondition(format!(
                "unexpected commit digest {actual}, expected {expected}"
            )));
        }
        let target = self.store.blob_path(&actual)?;
        let parent = target.parent().expect("blobs/sha256 is a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_status(parent.display(), e))?;
        if tokio::fs::symlink_metadata(&target).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
            return Err(Status::already_exists(format!("content {actual}")));
        }
        tokio::fs::rename(&data, &target)
            .await
            .map_err(|e| io_status(target.display(), e))?;
        // Committed content is immutable: drop the write bits.
        if let Ok(meta) = tokio::fs::metadata(&target).await {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777 & !0o333;
            let _ =
                tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        Ok(actual)
    }

    /// Leaves an uncommitted write resumable.
    async fn close(&mut self) {
        if let Some(mut file) = self.file.take() {
            let _ = file.flush().await;
            let _ = tokio::fs::write(self.dir.join("updatedat"), write_time(self.updated)).await;
        }
    }
}

/// The `Write` conversation: STAT, WRITE and COMMIT requests, each answered with the
/// writer's offset (and digest so far), until a COMMIT or the end of the stream.
async fn run_write(
    store: Arc<Store>,
    mut inbound: Streaming<WriteContentRequest>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(req) = inbound.message().await? else {
        return Ok(());
    };
    if !req.expected.is_empty() {
        parse_digest(&req.expected)?;
    }
    let mut total = req.total;
    let expected = req.expected.clone();
    let mut w = Writer::open(store.clone(), &req.r#ref, total, &expected).await?;
    if total <= 0 {
        total = w.total;
    }
    let res = converse(&store, &mut w, req, inbound, total, expected, tx).await;
    // Whatever happened, what was written stays on disk to resume from.
    w.close().await;
    res
}

async fn converse(
    store: &Store,
    w: &mut Writer,
    mut req: WriteContentRequest,
    mut inbound: Streaming<WriteContentRequest>,
    mut total: i64,
    mut expected: String,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let action = WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        let mut resp = WriteContentResponse {
            action: req.action,
            offset: w.offset,
            ..Default::default()
        };
        if !req.expected.is_empty() {
            parse_digest(&req.expected)?;
            expected = req.expected.clone();
            if store.blob_meta(&expected).await.is_ok() {
                w.file = None;
                let _ = tokio::fs::remove_dir_all(&w.dir).await;
                return Err(Status::already_exists(format!("content {expected}")));
            }
        }
        if req.total > 0 {
            total = req.total;
        }
        match action {
            WriteAction::Stat => {
                resp.digest = w.digest();
                resp.started_at = Some(w.started.into());
                resp.updated_at = Some(w.updated.into());
                resp.total = total;
            }
            WriteAction::Write | WriteAction::Commit => {
                if req.offset > 0 && req.offset != w.offset {
                    return Err(Status::out_of_range(format!(
                        "write at {} must happen at the current offset {}",
                        req.offset, w.offset
                    )));
                }
                if req.offset == 0 && w.offset > 0 {
                    w.truncate().await?;
                }
                if !req.data.is_empty() {
                    w.write(&req.data).await?;
                }
                resp.offset = w.offset;
                resp.digest = if action == WriteAction::Commit {
                    w.commit(total, &expected).await?
                } else {
                    w.digest()
                };
            }
        }
        if tx.send(Ok(resp)).await.is_err() || action == WriteAction::Commit {
            break;
        }
        match inbound.message().await? {
            Some(next) => req = next,
            None => break,
        }
    }
    Ok(())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for Service {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let store = self.choose(&request)?;
        let digest = request.into_inner().digest;
        let meta = store.blob_meta(&digest).await?;
        Ok(Response::new(InfoResponse {
            info: Some(Store::info(digest, &meta)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        self.choose(&request)?;
        let digest = request.into_inner().info.unwrap_or_default().digest;
        parse_digest(&digest)?;
        // As containerd's local store without a label store: blobs carry no labels.
        Err(Status::failed_precondition(format!(
            "content {digest}: labels cannot be updated on this immutable content store"
        )))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        request: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let store = self.choose(&request)?;
        no_filters(&request.get_ref().filters)?;
        let infos = store.list().await?;
        let pages: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(100)
            .map(|c| Ok(ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(pages))))
    }

    async fn delete(&self, request: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let store = self.choose(&request)?;
        let digest = request.into_inner().digest;
        store.blob_meta(&digest).await?;
        let path = store.blob_path(&digest)?;
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| io_status(format_args!("content {digest}"), e))?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        request: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let store = self.choose(&request)?;
        let rx = store.read(request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let store = self.choose(&request)?;
        let status = store.status(&request.into_inner().r#ref).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let store = self.choose(&request)?;
        no_filters(&request.get_ref().filters)?;
        Ok(Response::new(ListStatusesResponse {
            statuses: store.list_statuses().await?,
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let store = self.choose(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(status) = run_write(store, inbound, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let store = self.choose(&request)?;
        store.abort(&request.into_inner().r#ref).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_be_sha256_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_digest(&good).unwrap(), "a".repeat(64));
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}/x", "a".repeat(63)),
            "a".repeat(64),
            String::new(),
        ] {
            let err = parse_digest(&bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn refs_never_become_paths() {
        let store = Store::new(PathBuf::from("/cache"));
        let p = store.ingest_path("../../../etc/passwd");
        assert_eq!(p.parent(), Some(Path::new("/cache/ingest")));
        assert_eq!(p.file_name().unwrap().len(), 64);
        assert!(
            store
                .blob_path("sha256:../../x")
                .is_err_and(|s| s.code() == tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn store_ids_and_times() {
        assert_eq!(
            local_store_id(Path::new("/tmp/c")),
            "local:/tmp/c".to_string()
        );
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(read_time(&write_time(t)), Some(t));
    }

    #[tokio::test]
    async fn symlinked_blobs_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("secret");
        std::fs::write(&outside, b"not content").unwrap();
        let store = Store::new(d.path().join("store"));
        let digest = format!("sha256:{}", "b".repeat(64));
        let path = store.blob_path(&digest).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        let err = store.blob_meta(&digest).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(open_no_follow(&path).await.is_err());
    }
}
