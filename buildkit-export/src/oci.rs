//! Reads what BuildKit's `oci` and `docker` exporters produce — an OCI image layout
//! directory, the same layout as a tar, or a Docker image archive (`docker save`
//! format) — into a typed model, verifying every digest on the way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), buildkit_export::oci::Error> {
//! use buildkit_export::oci::{self, Platform};
//!
//! let layout = oci::read_path("image.oci.tar").await?;
//! let amd64 = layout
//!     .manifest_by_platform(&Platform::new("linux", "amd64"))
//!     .expect("an amd64 image");
//! println!("{} {:?}", amd64.digest(), amd64.config.as_ref().map(|c| &c.config.cmd));
//! println!("names: {:?}", layout.names());
//! # Ok(()) }
//! ```
//!
//! # What is verified
//! - Every `blobs/sha256/<hex>` hashes to its name.
//! - Every descriptor reached from `index.json` (nested indexes followed) names a blob
//!   that exists, with the descriptor's size and digest; a missing one is reported
//!   with who references it.
//! - Every image config's `rootfs.diff_ids` matches its layers: uncompressed layers by
//!   their digest, gzip layers by the digest of the decompressed stream (see
//!   [`Reader::verify_gzip_diff_ids`]).
//! - For `manifest.json` (Docker archives): configs and layers exist, a `<hex>.json`
//!   config hashes to its name, and each layer's uncompressed sha256 is the config's
//!   diff id.
//!
//! # Streaming and limits
//! A tar is read once, front to back, from any [`AsyncRead`] — so an export can be
//! checked as it arrives. Layers stream through sha256 and are never held in memory;
//! only files that look like JSON (start with `{` or `[`) and are at most
//! [`Reader::max_json_size`] are kept, up to [`Reader::max_total_json`] in all.
//! Entry paths that are absolute or contain `..`, links that leave the root, and
//! oversized documents or tar headers are errors, never panics.

mod collect;
mod digest;
mod error;
mod model;
mod resolve;

use std::path::Path;

use tokio::io::AsyncRead;

pub use digest::Digest;
pub use error::{Error, ErrorKind};
pub use model::{
    Blob, ContainerConfig, Descriptor, DockerImage, DockerLayer, ImageConfig, ImageManifest, Index,
    Layout, Manifest, NestedIndex, Platform, RootFs, annotation, media_type,
};

use collect::Limits;

/// Reads and verifies OCI layouts, OCI tars and Docker tars, with limits for untrusted
/// input.
///
/// ```
/// let reader = buildkit_export::oci::Reader::new()
///     .max_json_size(1024 * 1024)
///     .verify_gzip_diff_ids(false);
/// # let _ = reader;
/// ```
#[derive(Debug, Clone)]
pub struct Reader {
    limits: Limits,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with the default limits: 8 MiB per JSON document, 64 MiB of JSON in
    /// all, 100 000 entries; gzip diff ids verified.
    pub fn new() -> Self {
        Self {
            limits: Limits {
                max_json_size: 8 << 20,
                max_total_json: 64 << 20,
                max_entries: 100_000,
                gzip_diff_ids: true,
            },
        }
    }

    /// The largest JSON document (index, manifest, config) to read, in bytes.
    pub fn max_json_size(mut self, bytes: u64) -> Self {
        self.limits.max_json_size = bytes;
        self
    }

    /// The most bytes of JSON documents to hold in memory at once.
    pub fn max_total_json(mut self, bytes: u64) -> Self {
        self.limits.max_total_json = bytes;
        self
    }

    /// The most files and links the input may hold.
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.limits.max_entries = entries;
        self
    }

    /// Whether to decompress gzip layers as they stream past to check them against the
    /// config's diff ids (on by default; costs CPU, not memory). When off, only
    /// uncompressed layers are checked against diff ids.
    pub fn verify_gzip_diff_ids(mut self, verify: bool) -> Self {
        self.limits.gzip_diff_ids = verify;
        self
    }

    /// Reads an OCI layout directory, or a tar file (OCI or Docker).
    pub async fn read_path(&self, path: impl AsRef<Path>) -> Result<Layout, Error> {
        let path = path.as_ref();
        let at = Some(path);
        let metadata = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io(e).in_archive(at))?;
        let files = if metadata.is_dir() {
            collect::collect_dir(path, self.limits).await
        } else {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::io(e).in_archive(at))?;
            let file = tokio::io::BufReader::with_capacity(256 * 1024, file);
            collect::collect_tar(file, self.limits).await
        }
        .map_err(|e| e.in_archive(at))?;
        resolve::resolve(&files, self.limits).map_err(|e| e.in_archive(at))
    }

    /// Reads an OCI layout directory.
    pub async fn read_dir(&self, path: impl AsRef<Path>) -> Result<Layout, Error> {
        let path = path.as_ref();
        let files = collect::collect_dir(path, self.limits)
            .await
            .map_err(|e| e.in_archive(Some(path)))?;
        resolve::resolve(&files, self.limits).map_err(|e| e.in_archive(Some(path)))
    }

    /// Reads a tar stream (OCI or Docker) to its end, e.g. an export as it arrives.
    pub async fn read_tar<R>(&self, reader: R) -> Result<Layout, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        let files = collect::collect_tar(reader, self.limits).await?;
        resolve::resolve(&files, self.limits)
    }
}

/// [`Reader::read_path`] with the default limits.
pub async fn read_path(path: impl AsRef<Path>) -> Result<Layout, Error> {
    Reader::new().read_path(path).await
}

/// [`Reader::read_tar`] with the default limits.
pub async fn read_tar<R>(reader: R) -> Result<Layout, Error>
where
    R: AsyncRead + Unpin + Send,
{
    Reader::new().read_tar(reader).await
}
