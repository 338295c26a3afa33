//! The reader's error: what failed, and where (archive and entry).

use std::fmt;
use std::path::{Path, PathBuf};

use super::Digest;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why reading or verifying an image layout or archive failed.
///
/// [`kind`](Error::kind) says what failed; [`archive`](Error::archive) and
/// [`entry`](Error::entry) say where. The message includes all three.
pub struct Error {
    // Boxed: errors are rare and `Result<_, Error>` should stay small.
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    archive: Option<PathBuf>,
    entry: Option<String>,
    source: Option<Source>,
}

/// What failed; see [`Error::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading the archive or directory failed (the source says why), or a tar stream
    /// is malformed.
    Io,
    /// An entry's path, or a path or link target that an entry names, is absolute or
    /// climbs out with `..`.
    UnsafePath {
        /// The offending path.
        path: String,
    },
    /// A blob's sha256 differs from its name or from the descriptor that references it.
    DigestMismatch {
        /// The digest the name or descriptor promises.
        expected: Digest,
        /// The sha256 of the content.
        actual: Digest,
    },
    /// A blob's size differs from the descriptor that references it.
    SizeMismatch {
        /// The size the descriptor promises.
        expected: u64,
        /// The size of the content.
        actual: u64,
    },
    /// A layer's uncompressed digest differs from the image config's `rootfs.diff_ids`,
    /// or the config lists a different number of diff ids than there are layers.
    DiffIdMismatch {
        /// Index of the layer (0 = base layer); `None` when the counts differ.
        layer: Option<usize>,
        /// What the config says (for a count mismatch, the config's count as text).
        expected: String,
        /// What the layer content gives (for a count mismatch, the layer count).
        actual: String,
    },
    /// A blob that an index, manifest or `manifest.json` references is not there.
    MissingBlob {
        /// The missing digest.
        digest: Digest,
        /// Who references it, e.g. `index.json` or `manifest sha256:…`.
        referenced_by: String,
    },
    /// A file that `manifest.json` or a link names is not there.
    MissingFile {
        /// The missing path.
        path: String,
        /// Who references it.
        referenced_by: String,
    },
    /// A document or the sum of documents exceeds a [`Reader`](super::Reader) limit.
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size (entries, or bytes).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document (index, manifest, config, `manifest.json`) does not parse.
    InvalidJson,
    /// A string is not a `sha256:<hex>` digest.
    InvalidDigest {
        /// The offending value (truncated to 100 characters).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input has neither `index.json` nor `manifest.json` at its root.
    NotAnImage,
    /// The input breaks the layout rules in another way (the message says how).
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                archive: None,
                entry: None,
                source: None,
            }),
        }
    }

    pub(crate) fn io(err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io).with_source(err)
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid {
            reason: reason.into(),
        })
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn at_entry(mut self, entry: impl Into<String>) -> Self {
        if self.inner.entry.is_none() {
            self.inner.entry = Some(entry.into());
        }
        self
    }

    pub(crate) fn in_archive(mut self, archive: Option<&Path>) -> Self {
        if self.inner.archive.is_none() {
            self.inner.archive = archive.map(Path::to_path_buf);
        }
        self
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The archive file or layout directory being read, when the input was a path.
    pub fn archive(&self) -> Option<&Path> {
        self.inner.archive.as_deref()
    }

    /// The entry (path inside the archive or layout) that failed, e.g.
    /// `blobs/sha256/<hex>` or `manifest.json`.
    pub fn entry(&self) -> Option<&str> {
        self.inner.entry.as_deref()
    }

    /// Whether content did not match its digest, size or diff id.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::DigestMismatch { .. }
                | ErrorKind::SizeMismatch { .. }
                | ErrorKind::DiffIdMismatch { .. }
        )
    }

    /// Whether a referenced blob or file is absent.
    pub fn is_missing(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::MissingBlob { .. } | ErrorKind::MissingFile { .. }
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io => f.write_str("reading failed"),
            Self::UnsafePath { path } => write!(
                f,
                "unsafe path {path:?}: absolute paths and `..` are not allowed"
            ),
            Self::DigestMismatch { expected, actual } => {
                write!(f, "digest mismatch: expected {expected}, actual {actual}")
            }
            Self::SizeMismatch { expected, actual } => write!(
                f,
                "size mismatch: expected {expected} bytes, actual {actual} bytes"
            ),
            Self::DiffIdMismatch {
                layer: Some(layer),
                expected,
                actual,
            } => write!(
                f,
                "diff id mismatch for layer {layer}: the config says {expected}, the \
                 uncompressed layer is {actual}"
            ),
            Self::DiffIdMismatch {
                layer: None,
                expected,
                actual,
            } => write!(
                f,
                "the config lists {expected} diff ids but there are {actual} layers"
            ),
            Self::MissingBlob {
                digest,
                referenced_by,
            } => write!(f, "blob {digest} referenced by {referenced_by} is missing"),
            Self::MissingFile {
                path,
                referenced_by,
            } => write!(f, "file {path:?} referenced by {referenced_by} is missing"),
            Self::TooLarge { what, size, limit } => write!(
                f,
                "{what} is too large: {size} exceeds the limit of {limit} (raise it on \
                 `oci::Reader` if the input is trusted)"
            ),
            Self::InvalidJson => f.write_str("invalid JSON document"),
            Self::InvalidDigest { value, reason } => {
                write!(f, "invalid digest {value:?}: {reason}")
            }
            Self::NotAnImage => f.write_str(
                "neither index.json nor manifest.json found: not an OCI image layout or \
                 Docker image archive",
            ),
            Self::Invalid { reason } => f.write_str(reason),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(archive) = &self.inner.archive {
            write!(f, "{}: ", archive.display())?;
        }
        if let Some(entry) = &self.inner.entry {
            write!(f, "{entry}: ")?;
        }
        write!(f, "{}", self.inner.kind)?;
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("archive", &self.inner.archive)
            .field("entry", &self.inner.entry)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
