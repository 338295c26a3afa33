//! `moby.filesync.v1.FileSync`: serves named local directories (the build context,
//! the Dockerfile's directory, named contexts) to the daemon with fsutil's DiffCopy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use buildkit_proto::fsutil::types::Packet;
use buildkit_proto::moby::filesync::v1::file_sync_server::{
    FileSync as FileSyncService, FileSyncServer,
};
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::fsutil::{self, SendStats, WalkOptions, Walker};
use crate::metadata;
use crate::router::{Attachable, Router};

/// Metadata key naming the directory the daemon wants.
pub const KEY_DIR_NAME: &str = "dir-name";
/// Metadata key with include patterns.
pub const KEY_INCLUDE_PATTERNS: &str = "include-patterns";
/// Metadata key with exclude patterns (dockerignore syntax).
pub const KEY_EXCLUDE_PATTERNS: &str = "exclude-patterns";
/// Metadata key with paths whose symlinks to follow.
pub const KEY_FOLLOW_PATHS: &str = "followpaths";

/// Local directories offered to the daemon by name.
///
/// ```no_run
/// # fn demo() -> buildkit_session::Session {
/// use buildkit_session::{FileSync, Session};
/// let files = FileSync::new().dir("context", "./app").dir("dockerfile", "./app");
/// Session::new().attach(files)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct FileSync {
    dirs: BTreeMap<String, PathBuf>,
    keep_owner: bool,
    stats: Arc<SendStats>,
}

impl FileSync {
    /// No directories yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers `path` under `name` (`context`, `dockerfile`, or a named context).
    pub fn dir(mut self, name: impl Into<String>, path: impl AsRef<Path>) -> Self {
        self.dirs.insert(name.into(), path.as_ref().to_path_buf());
        self
    }

    /// Sends real owners instead of uid/gid 0 (BuildKit clients reset them for local
    /// sources, and so does this by default).
    pub fn keep_owner(mut self, keep: bool) -> Self {
        self.keep_owner = keep;
        self
    }

    /// The offered directories.
    pub fn dirs(&self) -> &BTreeMap<String, PathBuf> {
        &self.dirs
    }

    /// Counters of what was sent, shared with the running service.
    pub fn stats(&self) -> Arc<SendStats> {
        self.stats.clone()
    }
}

impl Attachable for FileSync {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(
            FileSyncServer::new(*self)
                .max_decoding_message_size(32 << 20)
                .max_encoding_message_size(32 << 20),
        );
    }
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl FileSyncService for FileSync {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let md = request.metadata();
        let name = metadata::first(md, KEY_DIR_NAME).unwrap_or_default();
        let Some(dir) = self.dirs.get(&name) else {
            return Err(Status::not_found(format!(
                "no access allowed to dir {name:?}"
            )));
        };
        let opts = WalkOptions {
            include_patterns: metadata::values(md, KEY_INCLUDE_PATTERNS),
            exclude_patterns: metadata::values(md, KEY_EXCLUDE_PATTERNS),
            follow_paths: metadata::values(md, KEY_FOLLOW_PATHS),
            reset_owner: !self.keep_owner,
        };
        let dir = dir.clone();
        let walker = tokio::task::spawn_blocking(move || Walker::new(&dir, &opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        let inbound = request.into_inner();
        let (tx, packets) = fsutil::outbound();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            if let Err(e) = fsutil::send(walker, inbound, tx.clone(), stats).await {
                let _ = tx.send(vec![Err(Status::from(e))]).await;
            }
        });
        Ok(Response::new(Box::pin(packets)))
    }

    type TarStreamStream = PacketStream;

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        Err(Status::unimplemented(
            "TarStream is not supported; use DiffCopy",
        ))
    }
}
