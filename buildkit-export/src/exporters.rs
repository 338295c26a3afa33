//! Exporters: where a build's result goes. Each is a [`buildkit_driver::Output`]: an
//! exporter entry for the solve request, and for the exporters that send their output
//! back to the client, the receiving end (a file, any writer, a directory, or Docker's
//! image store through `docker load`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildkit_driver::{Error, Finish, Output, OutputDone, Prepare, Result};
use buildkit_session::{FileSendTarget, Transfer};

use crate::layout_index::{self, RefName};
use tokio::io::AsyncWrite;

/// Layer compression for image exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    Uncompressed,
    /// gzip (the default).
    Gzip,
    /// eStargz (lazily pullable gzip).
    Estargz,
    /// zstd.
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Self::Uncompressed => "uncompressed",
            Self::Gzip => "gzip",
            Self::Estargz => "estargz",
            Self::Zstd => "zstd",
        }
    }
}

/// Options shared by the image exporters (`image`, `oci`, `docker`).
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    names: Vec<String>,
    push: bool,
    push_by_digest: bool,
    insecure: bool,
    oci_mediatypes: Option<bool>,
    compression: Option<Compression>,
    compression_level: Option<u32>,
    force_compression: bool,
    store: Option<bool>,
    unpack: Option<bool>,
    annotations: BTreeMap<String, String>,
    extra: BTreeMap<String, String>,
}

impl ImageOptions {
    /// The exporter attrs.
    pub fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = self.extra.clone();
        if !self.names.is_empty() {
            a.insert("name".into(), self.names.join(","));
        }
        if self.push {
            a.insert("push".into(), "true".into());
        }
        if self.push_by_digest {
            a.insert("push-by-digest".into(), "true".into());
        }
        if self.insecure {
            a.insert("registry.insecure".into(), "true".into());
        }
        if let Some(v) = self.oci_mediatypes {
            a.insert("oci-mediatypes".into(), v.to_string());
        }
        if let Some(c) = self.compression {
            a.insert("compression".into(), c.as_str().into());
        }
        if let Some(l) = self.compression_level {
            a.insert("compression-level".into(), l.to_string());
        }
        if self.force_compression {
            a.insert("force-compression".into(), "true".into());
        }
        if let Some(v) = self.store {
            a.insert("store".into(), v.to_string());
        }
        if let Some(v) = self.unpack {
            a.insert("unpack".into(), v.to_string());
        }
        for (k, v) in &self.annotations {
            a.insert(format!("annotation.{k}"), v.clone());
        }
        a
    }
}

/// Builder methods shared by the image exporters.
macro_rules! image_options {
    ($t:ty) => {
        impl $t {
            /// Adds an image name (`registry/repo:tag`).
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.opts.names.push(name.into());
                self
            }

            /// Uses OCI media types (or Docker's with `false`).
            pub fn oci_mediatypes(mut self, on: bool) -> Self {
                self.opts.oci_mediatypes = Some(on);
                self
            }

            /// Layer compression.
            pub fn compression(mut self, c: Compression) -> Self {
                self.opts.compression = Some(c);
                self
            }

            /// Compression level (gzip/estargz 0-9, zstd 0-22).
            pub fn compression_level(mut self, level: u32) -> Self {
                self.opts.compression_level = Some(level);
                self
            }

            /// Recompress layers that already exist with another compression.
            pub fn force_compression(mut self) -> Self {
                self.opts.force_compression = true;
                self
            }

            /// An annotation on the image manifest (`annotation.<key>`).
            pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
                self.opts.annotations.insert(key.into(), value.into());
                self
            }

            /// Any other exporter attr.
            pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
                self.opts.extra.insert(key.into(), value.into());
                self
            }
        }
    };
}

/// The `image` exporter: an image in the daemon's image store, optionally pushed to a
/// registry.
///
/// ```
/// use buildkit_export::Image;
/// let out = Image::new().name("registry.example.com/app:1").push();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Image {
    opts: ImageOptions,
}

image_options!(Image);

impl Image {
    /// No name yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pushes the image to its registry.
    pub fn push(mut self) -> Self {
        self.opts.push = true;
        self
    }

    /// Pushes without a tag (by digest only).
    pub fn push_by_digest(mut self) -> Self {
        self.opts.push_by_digest = true;
        self
    }

    /// Allows an insecure (plain HTTP or unverified TLS) registry. Only when asked.
    pub fn insecure(mut self) -> Self {
        self.opts.insecure = true;
        self
    }

    /// Whether to keep the image in the daemon's store (default true).
    pub fn store(mut self, on: bool) -> Self {
        self.opts.store = Some(on);
        self
    }

    /// Unpacks the image into the daemon's snapshotter.
    pub fn unpack(mut self, on: bool) -> Self {
        self.opts.unpack = Some(on);
        self
    }
}

impl Output for Image {
    fn exporter_type(&self) -> String {
        "image".into()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        self.opts.attrs()
    }

    fn prepare(self: Box<Self>, _ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        Ok(None)
    }
}

/// A registry push: the `image` exporter with `push=true` for `name`.
#[derive(Debug, Clone, Copy)]
pub struct Registry;

impl Registry {
    /// Pushes the result as `name` (`registry.example.com/app:1`).
    pub fn push(name: impl Into<String>) -> Image {
        Image::new().name(name).push()
    }
}

/// The `moby` exporter: an image in dockerd's image store (dockerd only).
#[derive(Debug, Clone, Default)]
pub struct Moby {
    names: Vec<String>,
}

impl Moby {
    /// An image tagged `name` in dockerd's store.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            names: vec![name.into()],
        }
    }

    /// Adds another tag.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }
}

impl Output for Moby {
    fn exporter_type(&self) -> String {
        "moby".into()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if !self.names.is_empty() {
            a.insert("name".into(), self.names.join(","));
        }
        a
    }

    fn prepare(self: Box<Self>, _ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        Ok(None)
    }
}

/// Where a streamed output goes.
enum Sink {
    File(PathBuf),
    Writer(Box<dyn AsyncWrite + Send + Unpin>),
    Dir(PathBuf),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Writer(_) => f.write_str("Writer"),
            Self::Dir(p) => write!(f, "Dir({})", p.display()),
        }
    }
}

fn finish(transfer: Transfer) -> Finish {
    Box::pin(async move {
        let d = transfer.await.map_err(Error::Session)?;
        Ok(OutputDone {
            bytes: d.bytes,
            detail: d.metadata,
        })
    })
}

/// The content store the `oci` and `docker` exporters write a layout directory
/// through (`tar=false`).
const EXPORT_STORE: &str = "export";

/// An image layout directory: the daemon writes the blobs into `dir` through the
/// session's content store; the client then records the image in `index.json` under
/// its names (`latest` without one), as BuildKit's client does.
fn register_layout_dir(dir: PathBuf, ctx: &mut Prepare<'_>) -> Result<Finish> {
    if ctx.content.ids().any(|id| id == EXPORT_STORE) {
        return Err(Error::Invalid(
            "only one image layout directory per build: BuildKit writes every one through the same store".into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::Invalid(format!(
            "creating the layout directory {}: {e}",
            dir.display()
        ))
    })?;
    ctx.content.add(EXPORT_STORE, &dir);
    let response = ctx.response.clone();
    Ok(Box::pin(async move {
        use base64::Engine;
        let response = response.get().cloned().unwrap_or_default();
        let invalid = |what: String| {
            Error::Invalid(format!(
                "recording the image in {}: {what}",
                dir.join("index.json").display()
            ))
        };
        let encoded = response
            .get("containerimage.descriptor")
            .ok_or_else(|| invalid("the daemon reported no containerimage.descriptor".into()))?;
        let desc = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "containerimage.descriptor {encoded:?} is not base64 JSON"
                ))
            })?;
        let names: Vec<RefName> = match response.get("image.name") {
            Some(n) if !n.is_empty() => n.split(',').map(|n| RefName::Image(n.into())).collect(),
            _ => vec![RefName::Tag("latest".into())],
        };
        let digest = layout_index::put(&dir, &desc, &names)
            .await
            .map_err(invalid)?;
        Ok(OutputDone {
            bytes: 0,
            detail: BTreeMap::from([("containerimage.digest".to_string(), digest)]),
        })
    }))
}

fn register(sink: Sink, ctx: &mut Prepare<'_>) -> Finish {
    let target = match sink {
        Sink::File(p) => FileSendTarget::File(p),
        Sink::Writer(w) => FileSendTarget::Writer(w),
        Sink::Dir(p) => FileSendTarget::Directory(p),
    };
    finish(ctx.filesend.target(ctx.index, target))
}

macro_rules! image_tar {
    ($t:ident, $ty:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $t {
            opts: ImageOptions,
            sink: Sink,
        }

        image_options!($t);

        impl $t {
            /// Writes the tar to a new file at `path` (replacing it).
            pub fn to_file(path: impl AsRef<Path>) -> Self {
                Self {
                    opts: ImageOptions::default(),
                    sink: Sink::File(path.as_ref().to_path_buf()),
                }
            }

            /// Streams the tar into `writer` (a file, a socket, a pipe, ...), shut down
            /// at the end.
            pub fn to_writer(writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
                Self {
                    opts: ImageOptions::default(),
                    sink: Sink::Writer(Box::new(writer)),
                }
            }

            /// Streams the tar to standard output.
            pub fn to_stdout() -> Self {
                Self::to_writer(tokio::io::stdout())
            }

            /// Writes an OCI image layout directory instead of a tar (`tar=false`): the
            /// daemon writes the blobs through the session, and the image is recorded
            /// in the directory's `index.json` under its names (`latest` without one).
            /// One layout directory per build.
            pub fn to_dir(path: impl AsRef<Path>) -> Self {
                Self {
                    opts: ImageOptions::default(),
                    sink: Sink::Dir(path.as_ref().to_path_buf()),
                }
            }
        }

        impl Output for $t {
            fn exporter_type(&self) -> String {
                $ty.into()
            }

            fn attrs(&self) -> BTreeMap<String, String> {
                let mut a = self.opts.attrs();
                if matches!(self.sink, Sink::Dir(_)) {
                    a.insert("tar".into(), "false".into());
                }
                a
            }

            fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
                match self.sink {
                    Sink::Dir(dir) => register_layout_dir(dir, ctx).map(Some),
                    sink => Ok(Some(register(sink, ctx))),
                }
            }
        }
    };
}

image_tar!(
    OciTar,
    "oci",
    "The `oci` exporter: an OCI image layout as a tar (or directory), streamed to the client."
);
image_tar!(
    DockerTar,
    "docker",
    "The `docker` exporter: a `docker load`-able tar (or layout directory), streamed to the client."
);

/// The `local` exporter: the result's filesystem, written into a local directory
/// (modes, symlinks and times kept; hostile paths refused).
#[derive(Debug, Clone)]
pub struct LocalDir {
    dest: PathBuf,
    platform_split: Option<bool>,
}

impl LocalDir {
    /// Writes into `dest` (created if missing; existing files not in the result stay).
    pub fn new(dest: impl AsRef<Path>) -> Self {
        Self {
            dest: dest.as_ref().to_path_buf(),
            platform_split: None,
        }
    }

    /// One subdirectory per platform (`linux_amd64/`), or not.
    pub fn platform_split(mut self, on: bool) -> Self {
        self.platform_split = Some(on);
        self
    }
}

impl Output for LocalDir {
    fn exporter_type(&self) -> String {
        "local".into()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if let Some(v) = self.platform_split {
            a.insert("platform-split".into(), v.to_string());
        }
        a
    }

    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        Ok(Some(register(Sink::Dir(self.dest), ctx)))
    }
}

/// The `tar` exporter: the result's filesystem as a plain tar.
#[derive(Debug)]
pub struct Tar {
    sink: Sink,
    platform_split: Option<bool>,
}

impl Tar {
    /// Writes the tar to a new file at `path`.
    pub fn to_file(path: impl AsRef<Path>) -> Self {
        Self {
            sink: Sink::File(path.as_ref().to_path_buf()),
            platform_split: None,
        }
    }

    /// Streams the tar into `writer`.
    pub fn to_writer(writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self {
            sink: Sink::Writer(Box::new(writer)),
            platform_split: None,
        }
    }

    /// One top-level directory per platform, or not.
    pub fn platform_split(mut self, on: bool) -> Self {
        self.platform_split = Some(on);
        self
    }
}

impl Output for Tar {
    fn exporter_type(&self) -> String {
        "tar".into()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if let Some(v) = self.platform_split {
            a.insert("platform-split".into(), v.to_string());
        }
        a
    }

    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        Ok(Some(register(self.sink, ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_attrs() {
        let i = Image::new()
            .name("a:1")
            .name("b:2")
            .push()
            .insecure()
            .oci_mediatypes(true)
            .compression(Compression::Zstd)
            .compression_level(3)
            .force_compression()
            .annotation("org.opencontainers.image.title", "t");
        let a = i.attrs();
        assert_eq!(a["name"], "a:1,b:2");
        assert_eq!(a["push"], "true");
        assert_eq!(a["registry.insecure"], "true");
        assert_eq!(a["oci-mediatypes"], "true");
        assert_eq!(a["compression"], "zstd");
        assert_eq!(a["compression-level"], "3");
        assert_eq!(a["force-compression"], "true");
        assert_eq!(a["annotation.org.opencontainers.image.title"], "t");
        assert!(
            !Image::new().attrs().contains_key("push"),
            "push only when asked"
        );
        assert!(
            !Image::new().attrs().contains_key("registry.insecure"),
            "insecure only when asked"
        );
        assert_eq!(OciTar::to_dir("/x").attrs()["tar"], "false");
        assert_eq!(Registry::push("r/a:1").attrs()["push"], "true");
    }
}

/// The `docker` exporter streamed straight into a Docker Engine's image store with
/// `POST /images/load`: no temporary file, nothing held in memory.
#[derive(Debug)]
pub struct DockerLoad {
    docker: docker_api::Docker,
    opts: ImageOptions,
}

image_options!(DockerLoad);

impl DockerLoad {
    /// Loads the result into the daemon `docker` talks to.
    pub fn new(docker: docker_api::Docker) -> Self {
        Self {
            docker,
            opts: ImageOptions::default(),
        }
    }
}

/// Bytes buffered between the exporter stream and `docker load`.
const LOAD_PIPE: usize = 1 << 20;

impl Output for DockerLoad {
    fn exporter_type(&self) -> String {
        "docker".into()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        self.opts.attrs()
    }

    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        use docker_api::http::{HeaderMap, HeaderValue, Method, header::CONTENT_TYPE};
        use futures_util::StreamExt;
        let (writer, reader) = tokio::io::duplex(LOAD_PIPE);
        let docker = self.docker;
        let load = tokio::spawn(async move {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            let resp = docker
                .request_unbounded(
                    Method::POST,
                    "/images/load?quiet=1",
                    headers,
                    docker_api::Body::reader(reader),
                )
                .await?;
            let mut messages = docker.json_stream::<serde_json::Value>(resp);
            let mut loaded = Vec::new();
            while let Some(m) = messages.next().await {
                let m = m?;
                if let Some(e) = m.get("error").and_then(|e| e.as_str()) {
                    return Err(Error::Invalid(format!("docker load: {e}")));
                }
                if let Some(s) = m.get("stream").and_then(|s| s.as_str()) {
                    loaded.push(s.trim().to_string());
                }
            }
            Ok::<_, Error>(loaded)
        });
        let transfer = ctx
            .filesend
            .target(ctx.index, FileSendTarget::Writer(Box::new(writer)));
        Ok(Some(Box::pin(async move {
            let d = transfer.await.map_err(Error::Session)?;
            let loaded = load
                .await
                .map_err(|e| Error::Invalid(format!("docker load task failed: {e}")))??;
            let mut detail = d.metadata;
            detail.insert("loaded".into(), loaded.join("\n"));
            Ok(OutputDone {
                bytes: d.bytes,
                detail,
            })
        })))
    }
}
