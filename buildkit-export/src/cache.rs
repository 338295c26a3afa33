//! Cache backends for `--cache-from` and `--cache-to`. Each is a
//! [`buildkit_driver::CacheBackend`]; the same value works for import and export where
//! the backend supports both (the driver also sends imports as the frontend's
//! `cache-imports` attr). [`LocalCache`] also has a client side: the directory is
//! served to the daemon as a content store, and its `index.json` updated after an
//! export.

use std::collections::BTreeMap;

use buildkit_driver::CacheBackend;

/// How much of the build graph to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the final result's layers (the default).
    Min,
    /// Every intermediate step too.
    Max,
}

macro_rules! common {
    ($t:ty) => {
        impl $t {
            /// Export intermediate steps too (`mode=max`).
            pub fn mode_max(mut self) -> Self {
                self.attrs.insert("mode".into(), "max".into());
                self
            }

            /// The export mode.
            pub fn mode(mut self, mode: CacheMode) -> Self {
                let v = match mode {
                    CacheMode::Min => "min",
                    CacheMode::Max => "max",
                };
                self.attrs.insert("mode".into(), v.into());
                self
            }

            /// Do not fail the build when the cache cannot be exported or imported.
            pub fn ignore_error(mut self) -> Self {
                self.attrs.insert("ignore-error".into(), "true".into());
                self
            }

            /// Any other attr.
            pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
                self.attrs.insert(key.into(), value.into());
                self
            }
        }
    };
}

mod local;

pub use local::LocalCache;

macro_rules! backend {
    ($t:ty, $name:literal) => {
        impl CacheBackend for $t {
            fn backend_type(&self) -> String {
                $name.into()
            }

            fn attrs(&self) -> BTreeMap<String, String> {
                self.attrs.clone()
            }
        }
    };
}

/// Cache in a registry (`type=registry,ref=...`).
///
/// ```
/// use buildkit_export::RegistryCache;
/// let cache = RegistryCache::new("registry.example.com/app:buildcache").mode_max();
/// ```
#[derive(Debug, Clone)]
pub struct RegistryCache {
    attrs: BTreeMap<String, String>,
}

impl RegistryCache {
    /// Cache at the image reference `reference`.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            attrs: BTreeMap::from([("ref".to_string(), reference.into())]),
        }
    }

    /// Stores the cache as an image manifest rather than an index.
    pub fn image_manifest(mut self, on: bool) -> Self {
        self.attrs.insert("image-manifest".into(), on.to_string());
        self
    }

    /// Uses OCI media types.
    pub fn oci_mediatypes(mut self, on: bool) -> Self {
        self.attrs.insert("oci-mediatypes".into(), on.to_string());
        self
    }

    /// Allows an insecure registry for the cache.
    pub fn insecure(mut self) -> Self {
        self.attrs.insert("registry.insecure".into(), "true".into());
        self
    }
}

common!(RegistryCache);
backend!(RegistryCache, "registry");

/// Cache embedded in the exported image itself (`type=inline`; import it with
/// [`RegistryCache`] on the image's reference).
#[derive(Debug, Clone, Default)]
pub struct InlineCache {
    attrs: BTreeMap<String, String>,
}

impl InlineCache {
    /// Inline cache metadata in the image config.
    pub fn new() -> Self {
        Self::default()
    }
}

common!(InlineCache);
backend!(InlineCache, "inline");

/// GitHub Actions cache (`type=gha`).
#[derive(Debug, Clone, Default)]
pub struct Gha {
    attrs: BTreeMap<String, String>,
}

impl Gha {
    /// The Actions cache, with the runner's token and URL.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            attrs: BTreeMap::from([
                ("url".to_string(), url.into()),
                ("token".to_string(), token.into()),
            ]),
        }
    }

    /// Separates caches of different builds (`scope`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.attrs.insert("scope".into(), scope.into());
        self
    }
}

common!(Gha);
backend!(Gha, "gha");

/// Amazon S3 cache (`type=s3`).
#[derive(Debug, Clone, Default)]
pub struct S3 {
    attrs: BTreeMap<String, String>,
}

impl S3 {
    /// A bucket in a region.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            attrs: BTreeMap::from([
                ("bucket".to_string(), bucket.into()),
                ("region".to_string(), region.into()),
            ]),
        }
    }

    /// An S3-compatible endpoint (`endpoint_url`).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.attrs.insert("endpoint_url".into(), url.into());
        self
    }

    /// A prefix for all objects.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.attrs.insert("prefix".into(), prefix.into());
        self
    }

    /// The cache manifest's name (`name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.attrs.insert("name".into(), name.into());
        self
    }

    /// Path-style addressing (`use_path_style`).
    pub fn use_path_style(mut self) -> Self {
        self.attrs.insert("use_path_style".into(), "true".into());
        self
    }

    /// Static credentials (otherwise the daemon's environment is used).
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.attrs
            .insert("access_key_id".into(), access_key_id.into());
        self.attrs
            .insert("secret_access_key".into(), secret_access_key.into());
        self
    }
}

common!(S3);
backend!(S3, "s3");

/// Azure Blob Storage cache (`type=azblob`).
#[derive(Debug, Clone, Default)]
pub struct AzBlob {
    attrs: BTreeMap<String, String>,
}

impl AzBlob {
    /// A storage account URL.
    pub fn new(account_url: impl Into<String>) -> Self {
        Self {
            attrs: BTreeMap::from([("account_url".to_string(), account_url.into())]),
        }
    }

    /// The cache manifest's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.attrs.insert("name".into(), name.into());
        self
    }

    /// The account's secret access key (otherwise the daemon's environment is used).
    pub fn secret_access_key(mut self, key: impl Into<String>) -> Self {
        self.attrs.insert("secret_access_key".into(), key.into());
        self
    }
}

common!(AzBlob);
backend!(AzBlob, "azblob");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_attrs() {
        let r = RegistryCache::new("localhost:5000/c:1")
            .mode_max()
            .image_manifest(true)
            .oci_mediatypes(true);
        assert_eq!(r.backend_type(), "registry");
        assert_eq!(r.attrs()["ref"], "localhost:5000/c:1");
        assert_eq!(r.attrs()["mode"], "max");
        assert_eq!(r.attrs()["image-manifest"], "true");
        assert_eq!(InlineCache::new().backend_type(), "inline");
        let s = S3::new("b", "eu-west-1")
            .endpoint_url("http://127.0.0.1:9000")
            .use_path_style();
        assert_eq!(s.attrs()["use_path_style"], "true");
        assert_eq!(Gha::new("u", "t").scope("s").attrs()["scope"], "s");
        assert_eq!(
            AzBlob::new("https://a.blob.core.windows.net")
                .name("n")
                .backend_type(),
            "azblob"
        );
    }
}
