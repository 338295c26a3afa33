//! The `local` cache backend: an OCI image layout in a client directory, served to
//! the daemon as a content store over the session, with `index.json` kept by the
//! client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildkit_driver::{CacheBackend, CacheRole, Error, Finish, OutputDone, Prepare, Result};
use buildkit_session::content::local_store_id;

use super::CacheMode;
use crate::layout_index::{self, RefName};
use crate::oci::Digest;

/// The tag used when none is given.
const DEFAULT_TAG: &str = "latest";

/// The exporter response key with the cache manifest's descriptor (JSON).
const RESPONSE_CACHE_MANIFEST: &str = "cache.manifest";

/// Cache in a local directory (`type=local`): an OCI image layout the daemon reads
/// and writes through the session, as `buildctl --export-cache type=local,dest=DIR`
/// and `--import-cache type=local,src=DIR` do.
///
/// The same value works for `cache_to` and `cache_from`. After an export, the cache
/// manifest is recorded in `DIR/index.json` under the tag (default `latest`,
/// replacing the manifest the tag had). An import looks the tag up in
/// `DIR/index.json`; when the directory has no such manifest yet (a first build), the
/// import is left out and the build reports a warning.
///
/// ```
/// use buildkit_export::LocalCache;
/// let cache = LocalCache::new("/tmp/app-cache").mode_max().tag("main");
/// # let _ = cache;
/// ```
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
    tag: Option<String>,
    digest: Option<String>,
    attrs: BTreeMap<String, String>,
}

impl LocalCache {
    /// Cache in `dir` (made absolute against the current directory; created on
    /// export).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            tag: None,
            digest: None,
            attrs: BTreeMap::new(),
        }
    }

    /// The tag in `index.json` to export to and import from (default `latest`).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Imports this cache manifest (`sha256:...`) instead of looking the tag up.
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.digest = Some(digest.into());
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    fn dir_attr(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// The manifest to import: the explicit digest, or the tag's in `index.json`;
    /// `Err` says why there is nothing to import.
    fn import_digest(&self) -> std::result::Result<String, String> {
        let skipped = |why: String| {
            format!(
                "local cache import from {} skipped: {why}",
                self.dir.display()
            )
        };
        let digest = match &self.digest {
            Some(d) => d.clone(),
            None => {
                let tag = self.tag_or_default();
                match layout_index::lookup(&self.dir, tag) {
                    Ok(Some(d)) => d,
                    Ok(None) => return Err(skipped(format!("no manifest tagged {tag:?}"))),
                    Err(e) => return Err(skipped(e)),
                }
            }
        };
        let parsed: Digest = digest
            .parse()
            .map_err(|e| skipped(format!("{digest:?}: {e}")))?;
        let blob = self.dir.join(parsed.blob_path());
        if !blob.is_file() {
            return Err(skipped(format!(
                "manifest {digest} is not in the directory"
            )));
        }
        Ok(digest)
    }
}

common!(LocalCache);

impl CacheBackend for LocalCache {
    fn backend_type(&self) -> String {
        "local".into()
    }

    /// The export attrs (`dest`); see [`CacheBackend::attrs_for`].
    fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = self.attrs.clone();
        a.insert("dest".into(), self.dir_attr());
        if let Some(t) = &self.tag {
            a.insert("tag".into(), t.clone());
        }
        a
    }

    fn attrs_for(&self, role: CacheRole) -> std::result::Result<BTreeMap<String, String>, String> {
        match role {
            CacheRole::Export => Ok(self.attrs()),
            CacheRole::Import => {
                let digest = self.import_digest()?;
                let mut a = self.attrs.clone();
                a.insert("src".into(), self.dir_attr());
                a.insert("digest".into(), digest);
                if let Some(t) = &self.tag {
                    a.insert("tag".into(), t.clone());
                }
                Ok(a)
            }
        }
    }

    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        ctx.content
            .add(local_store_id(Path::new(&self.dir_attr())), &self.dir);
        if ctx.cache_role != Some(CacheRole::Export) {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Error::Invalid(format!(
                "creating the cache directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let response = ctx.response.clone();
        let tag = self.tag_or_default().to_string();
        Ok(Some(Box::pin(async move {
            let manifest = response
                .get()
                .and_then(|r| r.get(RESPONSE_CACHE_MANIFEST))
                .cloned();
            let Some(manifest) = manifest else {
                // Nothing was exported (e.g. `ignore-error` after a failure).
                return Ok(OutputDone::default());
            };
            let digest = layout_index::put(&self.dir, &manifest, &[RefName::Tag(tag.clone())])
                .await
                .map_err(|e| {
                    Error::Invalid(format!(
                        "updating {}: {e}",
                        self.dir.join("index.json").display()
                    ))
                })?;
            Ok(OutputDone {
                bytes: 0,
                detail: BTreeMap::from([
                    ("cache.manifest".to_string(), digest),
                    ("tag".to_string(), tag),
                ]),
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_attrs_need_a_tagged_manifest_in_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let cache = LocalCache::new(d.path()).mode_max();
        let why = cache.attrs_for(CacheRole::Import).unwrap_err();
        assert!(why.contains("skipped"), "{why}");
        assert!(why.contains("index.json"), "{why}");

        let hex = "d".repeat(64);
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            d.path().join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{hex}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
            ),
        )
        .unwrap();
        let why = cache.attrs_for(CacheRole::Import).unwrap_err();
        assert!(why.contains("not in the directory"), "{why}");
        std::fs::write(d.path().join("blobs/sha256").join(&hex), b"x").unwrap();
        let a = cache.attrs_for(CacheRole::Import).unwrap();
        assert_eq!(a["src"], d.path().to_string_lossy());
        assert_eq!(a["digest"], format!("sha256:{hex}"));
        assert!(!a.contains_key("dest"));
        let why = cache
            .clone()
            .tag("v2")
            .attrs_for(CacheRole::Import)
            .unwrap_err();
        assert!(why.contains("no manifest tagged \"v2\""), "{why}");

        let e = cache.attrs_for(CacheRole::Export).unwrap();
        assert_eq!(e["dest"], d.path().to_string_lossy());
        assert_eq!(e["mode"], "max");
        assert!(!e.contains_key("src") && !e.contains_key("digest"));
    }
}
