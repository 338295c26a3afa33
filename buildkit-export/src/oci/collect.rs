//! First pass: walk a tar stream or a directory once, hash every file as it streams
//! past, and keep only small JSON documents in memory.
//!
//! A tar stream cannot be rewound and its `index.json` usually comes last, so nothing
//! can be resolved until the walk ends; what each file *is* is decided afterwards (see
//! `resolve`), from what this pass recorded.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::digest::is_sha256_hex;
use super::{Digest, Error, ErrorKind};

const CHUNK: usize = 64 * 1024;
/// Bytes async-tar may read between two entries we see: headers, GNU long names and
/// PAX records, which it buffers whole. Real ones are a few KiB.
const HEADER_BUDGET: u64 = 1024 * 1024;
/// Symlink chains longer than this are treated as loops.
const MAX_LINK_HOPS: usize = 16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_json_size: u64,
    pub max_total_json: u64,
    pub max_entries: usize,
    pub gzip_diff_ids: bool,
}

/// The digest of a file's content once decompressed, as far as this pass knows it.
#[derive(Debug)]
pub(crate) enum Uncompressed {
    /// Not compressed (no gzip or zstd magic): the diff id is the file's own digest.
    Same,
    /// Gzip: the digest of the decompressed stream, or why decompressing failed.
    Gzip(Result<Digest, String>),
    /// Compressed in a way this pass does not decompress (zstd, or gzip with
    /// decompression turned off).
    Unknown,
}

#[derive(Debug)]
pub(crate) struct FileRecord {
    pub size: u64,
    pub digest: Digest,
    /// The content, when it looks like JSON and is within the size limit.
    pub json: Option<Vec<u8>>,
    pub uncompressed: Uncompressed,
}

#[derive(Debug)]
enum Node {
    File(FileRecord),
    /// A symlink or hard link, with its target already made relative to the root.
    Link(String),
}

/// Everything the walk saw, by normalized path.
#[derive(Debug)]
pub(crate) struct Files {
    nodes: HashMap<String, Node>,
    json_total: u64,
    limits: Limits,
}

impl Files {
    fn new(limits: Limits) -> Self {
        Self {
            nodes: HashMap::new(),
            json_total: 0,
            limits,
        }
    }

    fn insert(&mut self, path: String, node: Node) -> Result<(), Error> {
        if self.nodes.len() >= self.limits.max_entries {
            return Err(Error::new(ErrorKind::TooLarge {
                what: "the number of entries".into(),
                size: self.nodes.len() as u64 + 1,
                limit: self.limits.max_entries as u64,
            })
            .at_entry(path));
        }
        if let Node::File(record) = &node {
            check_blob_name(&path, Some(&record.digest))?;
            if let Some(json) = &record.json {
                self.json_total += json.len() as u64;
                if self.json_total > self.limits.max_total_json {
                    return Err(Error::new(ErrorKind::TooLarge {
                        what: "the JSON documents held in memory".into(),
                        size: self.json_total,
                        limit: self.limits.max_total_json,
                    })
                    .at_entry(path));
                }
            }
        } else {
            // A link's content is checked once the link is resolved.
            check_blob_name(&path, None)?;
        }
        if self.nodes.contains_key(&path) {
            return Err(Error::invalid("the archive has this entry twice").at_entry(path));
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// The file at `path`, following links; also returns the path where the content is.
    pub(crate) fn get(&self, path: &str) -> Result<Option<(&str, &FileRecord)>, Error> {
        let Some((mut at, mut node)) = self.nodes.get_key_value(path) else {
            return Ok(None);
        };
        for _ in 0..MAX_LINK_HOPS {
            let target = match node {
                Node::File(record) => return Ok(Some((at.as_str(), record))),
                Node::Link(target) => target,
            };
            (at, node) = self.nodes.get_key_value(target).ok_or_else(|| {
                Error::new(ErrorKind::MissingFile {
                    path: target.clone(),
                    referenced_by: format!("the link {path}"),
                })
                .at_entry(path)
            })?;
        }
        Err(Error::invalid(format!(
            "more than {MAX_LINK_HOPS} links to follow (a loop?)"
        ))
        .at_entry(path))
    }

    /// Every `blobs/sha256/<hex>` path, sorted.
    pub(crate) fn blob_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self
            .nodes
            .keys()
            .map(String::as_str)
            .filter(|p| p.starts_with("blobs/"))
            .collect();
        paths.sort_unstable();
        paths
    }
}

/// Blobs must be `blobs/sha256/<hex>` and hash to their name (when `digest` is given).
fn check_blob_name(path: &str, digest: Option<&Digest>) -> Result<(), Error> {
    let Some(rest) = path.strip_prefix("blobs/") else {
        return Ok(());
    };
    match rest.split_once('/') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => match digest {
            Some(actual) if actual.hex() != hex => Err(Error::new(ErrorKind::DigestMismatch {
                expected: Digest::from_hex(hex).expect("checked hex"),
                actual: actual.clone(),
            })
            .at_entry(path)),
            _ => Ok(()),
        },
        Some(("sha256", _)) => {
            Err(Error::invalid("blob name is not 64 lowercase hex digits").at_entry(path))
        }
        Some((algorithm, _)) => Err(Error::invalid(format!(
            "unsupported digest algorithm {algorithm:?}: only sha256 blobs can be verified"
        ))
        .at_entry(path)),
        None => Err(Error::invalid("unexpected entry directly under blobs/").at_entry(path)),
    }
}

/// A relative path without `.`, empty components or a trailing `/`; absolute paths and
/// `..` are refused.
pub(crate) fn normalize(raw: &str) -> Result<String, Error> {
    let unsafe_path = || {
        Error::new(ErrorKind::UnsafePath {
            path: raw.chars().take(300).collect(),
        })
    };
    if raw.starts_with('/') {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symlink at `link` pointing to `target` lands, relative to the root; `..` may
/// climb within the root but not out of it.
fn symlink_target(link: &str, target: &str) -> Result<String, Error> {
    let unsafe_path = || {
        Error::new(ErrorKind::UnsafePath {
            path: target.chars().take(300).collect(),
        })
        .at_entry(link)
    };
    if target.starts_with('/') {
        return Err(unsafe_path());
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(unsafe_path)?;
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Error::invalid(format!(
            "{what} is not UTF-8: {:?}",
            String::from_utf8_lossy(bytes)
        ))
    })
}

/// Counts bytes handed to async-tar and fails once they pass a limit, so headers it
/// buffers whole (long names, PAX records) cannot grow without bound.
struct Metered<R> {
    inner: R,
    meter: Arc<Meter>,
}

#[derive(Default)]
struct Meter {
    read: AtomicU64,
    allowed_at: AtomicU64,
    limit: AtomicU64,
}

impl Meter {
    fn allow(&self, more: u64) {
        let read = self.read.load(Ordering::Relaxed);
        self.allowed_at.store(read, Ordering::Relaxed);
        self.limit
            .store(read.saturating_add(more), Ordering::Relaxed);
    }

    fn since_allowed(&self) -> u64 {
        self.read.load(Ordering::Relaxed) - self.allowed_at.load(Ordering::Relaxed)
    }

    fn exceeded(&self) -> bool {
        self.read.load(Ordering::Relaxed) > self.limit.load(Ordering::Relaxed)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.meter.exceeded() {
            return Poll::Ready(Err(io::Error::other("tar headers too large")));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.meter.read.fetch_add(n, Ordering::Relaxed);
        poll
    }
}

/// Reads every entry of a tar stream.
pub(crate) async fn collect_tar<R>(reader: R, limits: Limits) -> Result<Files, Error>
where
    R: AsyncRead + Unpin + Send,
{
    let meter = Arc::new(Meter::default());
    meter.allow(HEADER_BUDGET);
    let metered = Metered {
        inner: reader,
        meter: meter.clone(),
    };
    let mut entries = async_tar::Archive::new(metered)
        .entries()
        .map_err(Error::io)?;
    let mut files = Files::new(limits);
    let mut last = String::new();
    loop {
        meter.allow(HEADER_BUDGET);
        let next = entries.next().await;
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| {
            let err = if meter.exceeded() {
                Error::new(ErrorKind::TooLarge {
                    what: "the tar headers (long names, PAX records) of one entry".into(),
                    size: meter.since_allowed(),
                    limit: HEADER_BUDGET,
                })
            } else {
                Error::io(e)
            };
            if last.is_empty() {
                err
            } else {
                err.at_entry(format!("after {last}"))
            }
        })?;
        meter.allow(u64::MAX);

        let raw_path = utf8(&entry.path_bytes(), "entry path")?;
        let path = normalize(&raw_path).map_err(|e| e.at_entry(raw_path.clone()))?;
        let declared = declared_size(&mut entry)
            .await
            .map_err(|e| Error::io(e).at_entry(&path))?;
        let kind = entry.header().entry_type();
        let link = if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::invalid("link without a target").at_entry(&path))?;
            let target = utf8(&target, "link target").map_err(|e| e.at_entry(&path))?;
            Some(if kind.is_hard_link() {
                normalize(&target).map_err(|e| e.at_entry(&path))?
            } else {
                symlink_target(&path, &target)?
            })
        } else {
            None
        };

        let node = if let Some(target) = link {
            Some(Node::Link(target))
        } else if kind.is_gnu_sparse() {
            return Err(Error::invalid("sparse tar entries are not supported").at_entry(path));
        } else if kind.is_file() || kind.is_contiguous() {
            let record = read_file(&mut entry, limits)
                .await
                .map_err(|e| Error::io(e).at_entry(&path))?;
            if record.size != declared {
                return Err(Error::invalid(format!(
                    "entry holds {} bytes but its header says {declared} (truncated archive?)",
                    record.size
                ))
                .at_entry(path));
            }
            Some(Node::File(record))
        } else {
            // Directories and anything else: skip, but through our reader so its body
            // does not count against the header budget.
            tokio::io::copy(&mut entry, &mut tokio::io::sink())
                .await
                .map_err(|e| Error::io(e).at_entry(&path))?;
            None
        };
        if let Some(node) = node {
            if path.is_empty() {
                return Err(
                    Error::invalid("a file entry names the archive root").at_entry(raw_path)
                );
            }
            files.insert(path.clone(), node)?;
        }
        last = path;
    }
    Ok(files)
}

/// The entry's size: from its PAX `size` record when it has one (Go's archive/tar puts
/// sizes over 8 GiB only there), else from its header.
async fn declared_size<R: AsyncRead + Unpin>(entry: &mut async_tar::Entry<R>) -> io::Result<u64> {
    if let Some(records) = entry.pax_extensions().await? {
        for record in records {
            let record = record?;
            if record.key_bytes() == b"size" {
                return std::str::from_utf8(record.value_bytes())
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| io::Error::other("invalid PAX size record"));
            }
        }
    }
    entry.header().entry_size()
}

/// Reads every file under `root`; symlinks are recorded, never followed out of it.
pub(crate) async fn collect_dir(root: &Path, limits: Limits) -> Result<Files, Error> {
    // Refuse a wrong directory before hashing all of it.
    let mut is_image = false;
    for name in ["index.json", "manifest.json"] {
        is_image |= tokio::fs::symlink_metadata(root.join(name)).await.is_ok();
    }
    if !is_image {
        return Err(Error::new(ErrorKind::NotAnImage));
    }
    let mut files = Files::new(limits);
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let mut read_dir = tokio::fs::read_dir(root.join(&dir))
            .await
            .map_err(|e| Error::io(e).at_entry(dir_name(&dir)))?;
        while let Some(item) = read_dir
            .next_entry()
            .await
            .map_err(|e| Error::io(e).at_entry(dir_name(&dir)))?
        {
            let name = item.file_name();
            let name = utf8(name.as_encoded_bytes(), "file name")
                .map_err(|e| e.at_entry(dir_name(&dir)))?;
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let file_type = item
                .file_type()
                .await
                .map_err(|e| Error::io(e).at_entry(&path))?;
            if file_type.is_dir() {
                dirs.push(path);
            } else if file_type.is_symlink() {
                let target = tokio::fs::read_link(item.path())
                    .await
                    .map_err(|e| Error::io(e).at_entry(&path))?;
                let target = utf8(target.as_os_str().as_encoded_bytes(), "link target")
                    .map_err(|e| e.at_entry(&path))?;
                let target = symlink_target(&path, &target)?;
                files.insert(path, Node::Link(target))?;
            } else if file_type.is_file() {
                let file = tokio::fs::File::open(item.path())
                    .await
                    .map_err(|e| Error::io(e).at_entry(&path))?;
                let record = read_file(file, limits)
                    .await
                    .map_err(|e| Error::io(e).at_entry(&path))?;
                files.insert(path, Node::File(record))?;
            }
        }
    }
    Ok(files)
}

fn dir_name(dir: &str) -> &str {
    if dir.is_empty() { "." } else { dir }
}

/// Feeds what it reads to sha256 and counts it.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    len: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        self.sha.update(new);
        self.len += new.len() as u64;
        poll
    }
}

enum Sniffed {
    Json,
    Gzip,
    Zstd,
    Other,
}

fn sniff(prefix: &[u8]) -> Sniffed {
    match prefix {
        [0x1f, 0x8b, ..] => Sniffed::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Sniffed::Zstd,
        _ => match prefix.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Sniffed::Json,
            _ => Sniffed::Other,
        },
    }
}

/// Hashes a file as it streams past; keeps it only if it looks like a small JSON
/// document; for gzip, also hashes the decompressed stream (the layer's diff id).
async fn read_file<R: AsyncRead + Unpin>(reader: R, limits: Limits) -> io::Result<FileRecord> {
    let mut hashing = Hashing {
        inner: reader,
        sha: Sha256::new(),
        len: 0,
    };
    let mut buf = vec![0u8; CHUNK];

    // Enough of the start to tell JSON, gzip and zstd apart.
    let mut prefix = Vec::new();
    loop {
        let n = hashing.read(&mut buf).await?;
        prefix.extend_from_slice(&buf[..n]);
        let decided = prefix.len() >= 4 && prefix.iter().any(|b| !b.is_ascii_whitespace());
        if n == 0 || decided || prefix.len() >= CHUNK {
            break;
        }
    }

    let mut json = None;
    let mut uncompressed = Uncompressed::Same;
    match sniff(&prefix) {
        Sniffed::Json => {
            let cap = usize::try_from(limits.max_json_size).unwrap_or(usize::MAX);
            let mut doc = (prefix.len() <= cap).then_some(prefix);
            loop {
                let n = hashing.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if let Some(d) = &mut doc {
                    if d.len() + n > cap {
                        doc = None;
                    } else {
                        d.extend_from_slice(&buf[..n]);
                    }
                }
            }
            json = doc;
        }
        Sniffed::Gzip if limits.gzip_diff_ids => {
            let chained = std::io::Cursor::new(prefix).chain(&mut hashing);
            let mut decoder = GzipDecoder::new(tokio::io::BufReader::new(chained));
            decoder.multiple_members(true);
            let mut diff = Sha256::new();
            let decoded = loop {
                match decoder.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => diff.update(&buf[..n]),
                    Err(e) => break Err(e),
                }
            };
            drop(decoder);
            // What the decoder left (after a decoding error) still counts for the digest.
            drain(&mut hashing, &mut buf).await?;
            uncompressed = Uncompressed::Gzip(
                decoded
                    .map(|()| Digest::from_sha256(diff.finalize().into()))
                    .map_err(|e| e.to_string()),
            );
        }
        sniffed => {
            if !matches!(sniffed, Sniffed::Other) {
                uncompressed = Uncompressed::Unknown;
            }
            drain(&mut hashing, &mut buf).await?;
        }
    }
    Ok(FileRecord {
        size: hashing.len,
        digest: Digest::from_sha256(hashing.sha.finalize().into()),
        json,
        uncompressed,
    })
}

async fn drain<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<()> {
    while reader.read(buf).await? != 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes_and_cleans_the_rest() {
        assert_eq!(normalize("./blobs//sha256/./x").unwrap(), "blobs/sha256/x");
        assert_eq!(normalize("index.json").unwrap(), "index.json");
        assert_eq!(normalize("./").unwrap(), "");
        for bad in ["/etc/passwd", "../x", "blobs/../../x", "a/.."] {
            assert!(
                matches!(
                    normalize(bad).unwrap_err().kind(),
                    ErrorKind::UnsafePath { .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn symlink_targets_stay_inside_the_root() {
        assert_eq!(
            symlink_target("abc/layer.tar", "../def/layer.tar").unwrap(),
            "def/layer.tar"
        );
        assert_eq!(symlink_target("a", "b").unwrap(), "b");
        assert!(symlink_target("abc/layer.tar", "../../x").is_err());
        assert!(symlink_target("abc/layer.tar", "/etc/passwd").is_err());
    }

    #[test]
    fn sniffing_tells_json_gzip_and_zstd_apart() {
        assert!(matches!(sniff(b"  \n{\"a\":1}"), Sniffed::Json));
        assert!(matches!(sniff(b"[{}]"), Sniffed::Json));
        assert!(matches!(sniff(&[0x1f, 0x8b, 8, 0]), Sniffed::Gzip));
        assert!(matches!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Sniffed::Zstd));
        assert!(matches!(sniff(b"bin/\0\0\0"), Sniffed::Other));
    }

    fn limits() -> Limits {
        Limits {
            max_json_size: 16,
            max_total_json: 1024,
            max_entries: 10,
            gzip_diff_ids: true,
        }
    }

    #[tokio::test]
    async fn read_file_keeps_small_json_only() {
        let small = read_file(&b"{\"a\":1}"[..], limits()).await.unwrap();
        assert_eq!(small.json.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(small.digest, Digest::of(b"{\"a\":1}"));
        assert_eq!(small.size, 7);

        let big = vec![b'{'; 100];
        let record = read_file(&big[..], limits()).await.unwrap();
        assert!(record.json.is_none());
        assert_eq!(record.digest, Digest::of(&big));
        assert_eq!(record.size, 100);
    }

    #[tokio::test]
    async fn read_file_hashes_gzip_both_ways() {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let plain = vec![7u8; 300_000];
        let mut encoder = GzipEncoder::new(Vec::new());
        encoder.write_all(&plain).await.unwrap();
        encoder.shutdown().await.unwrap();
        let gz = encoder.into_inner();

        let record = read_file(&gz[..], limits()).await.unwrap();
        assert_eq!(record.digest, Digest::of(&gz));
        assert_eq!(record.size, gz.len() as u64);
        match record.uncompressed {
            Uncompressed::Gzip(Ok(d)) => assert_eq!(d, Digest::of(&plain)),
            other => panic!("{other:?}"),
        }

        // A broken gzip stream still gets its stored digest; the decode error is kept.
        let mut broken = gz.clone();
        broken.truncate(gz.len() / 2);
        let record = read_file(&broken[..], limits()).await.unwrap();
        assert_eq!(record.digest, Digest::of(&broken));
        assert!(matches!(record.uncompressed, Uncompressed::Gzip(Err(_))));
    }
}
