//! The typed model of what the reader found: OCI documents and the verified result.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Digest, Error};

/// Media types the reader recognises.
pub mod media_type {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker manifest list (read like an OCI index).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest, schema 2 (read like an OCI manifest).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// Whether `media_type` is an image index or manifest list.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }

    /// Whether `media_type` is an image manifest.
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// Whether `media_type` is an image config (as opposed to an artifact's config).
    pub fn is_image_config(media_type: &str) -> bool {
        media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
    }
}

/// Annotation keys the reader takes image names from.
pub mod annotation {
    /// OCI reference name: a tag (`1`) or a full reference, per the image-spec.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// containerd's full image name (`example.com/app:1`), written by BuildKit.
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
}

/// Docker writes `null` for empty lists and maps; read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The platform an image runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`, `arm64`, `386`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for `arm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows).
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
}

impl Platform {
    /// A platform with no variant, e.g. `Platform::new("linux", "amd64")`.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Self {
        Self {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// The same platform with a CPU variant.
    pub fn with_variant(mut self, variant: impl Into<String>) -> Self {
        self.variant = Some(variant.into());
        self
    }

    /// Whether `candidate` satisfies this platform: same OS and architecture, and the
    /// same variant when this platform names one (`linux/arm64` matches
    /// `linux/arm64/v8`; `linux/arm/v7` does not match `linux/arm/v6`).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    /// Parses `os/architecture[/variant]`, as in `--platform linux/arm/v7`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self::new(*os, *arch)),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self::new(*os, *arch).with_variant(*variant))
            }
            _ => Err(Error::invalid(format!(
                "invalid platform {s:?}: expected os/architecture[/variant]"
            ))),
        }
    }
}

/// A reference to a blob: what it is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Descriptor {
    /// Media type of the referenced blob.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the referenced blob.
    pub digest: Digest,
    /// Size of the referenced blob in bytes.
    pub size: u64,
    /// Platform of the referenced manifest (in an index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Where a non-distributable blob can be fetched; such blobs may be absent.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Artifact type of the referenced manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// An OCI image index (or Docker manifest list): `index.json` or a nested index blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (or Docker schema 2 manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type (BuildKit's attestation manifests set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config (or an artifact's config).
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (attestations, signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The basic fields of an image config (OCI or Docker); other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// When the image was created (RFC 3339), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// How to run a container from the image.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
    /// The uncompressed layer digests.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The platform this config declares, when it names an OS and architecture.
    pub fn platform(&self) -> Option<Platform> {
        if self.os.is_empty() || self.architecture.is_empty() {
            return None;
        }
        let mut platform = Platform::new(&self.os, &self.architecture);
        platform.variant = self.variant.clone();
        Some(platform)
    }
}

/// The `config` object of an image config: how to run a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerConfig {
    /// Environment, `KEY=value`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// Default command (`None` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Entrypoint (`None` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The sha256 of each uncompressed layer, base first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

/// A verified blob under `blobs/sha256/`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blob {
    /// Its digest (equal to its name and its content's sha256).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// An index reached from `index.json` (BuildKit puts a multi-platform image's index
/// there as a nested index).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NestedIndex {
    /// The descriptor that references it.
    pub descriptor: Descriptor,
    /// The index that references it (`None`: `index.json`).
    pub parent: Option<Digest>,
    /// The parsed index.
    pub index: Index,
}

/// An image manifest reached from `index.json`, with its config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageManifest {
    /// The descriptor that references it (digest, media type, size, platform,
    /// annotations).
    pub descriptor: Descriptor,
    /// The index that references it (`None`: `index.json`).
    pub parent: Option<Digest>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The parsed config, when the config is an image config (not for artifacts such
    /// as BuildKit's attestation manifests).
    pub config: Option<ImageConfig>,
    /// The platform from the descriptor, or else from the config.
    pub platform: Option<Platform>,
    /// Image names: `io.containerd.image.name` and `org.opencontainers.image.ref.name`
    /// annotations on the descriptors leading here, then Docker `RepoTags` of the same
    /// config, without repeats.
    pub names: Vec<String>,
    /// Whether every layer was checked against the config's diff ids (layers that are
    /// uncompressed, or gzip with [`Reader::verify_gzip_diff_ids`](super::Reader::verify_gzip_diff_ids));
    /// `false` for zstd layers, non-distributable layers that are absent, or no config.
    pub diff_ids_verified: bool,
}

impl ImageManifest {
    /// The manifest's digest.
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// Whether this is an attestation manifest BuildKit attaches to an image.
    pub fn is_attestation(&self) -> bool {
        self.descriptor
            .annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    }
}

/// One image of a Docker archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DockerImage {
    /// Path of the config in the archive (`<hex>.json` or `blobs/sha256/<hex>`).
    pub config_path: String,
    /// The config's digest (the image id).
    pub config_digest: Digest,
    /// The parsed config.
    pub config: ImageConfig,
    /// `RepoTags`, e.g. `busybox:latest`.
    pub repo_tags: Vec<String>,
    /// The layers, base first.
    pub layers: Vec<DockerLayer>,
    /// Whether every layer was checked against the config's diff ids (see
    /// [`ImageManifest::diff_ids_verified`]).
    pub diff_ids_verified: bool,
}

/// One layer of a [`DockerImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DockerLayer {
    /// Path in the archive (`<id>/layer.tar` or `blobs/sha256/<hex>`).
    pub path: String,
    /// The sha256 of the file as stored.
    pub digest: Digest,
    /// Its size in bytes as stored.
    pub size: u64,
    /// The config's diff id for this layer.
    pub diff_id: Digest,
}

/// What an OCI image layout, OCI tar or Docker tar holds, every digest verified.
///
/// Built by [`Reader`](super::Reader) (or [`read_path`](super::read_path),
/// [`read_tar`](super::read_tar)). An OCI layout fills [`index`](Self::index),
/// [`indexes`](Self::indexes) and [`manifests`](Self::manifests); a Docker archive
/// fills [`docker_images`](Self::docker_images), and also the OCI fields when it
/// carries an `index.json` (Docker 25+, BuildKit's `docker` exporter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    /// `imageLayoutVersion` from `oci-layout`, when present.
    pub layout_version: Option<String>,
    /// `index.json`, when present.
    pub index: Option<Index>,
    /// Nested indexes reached from `index.json`, in the order found.
    pub indexes: Vec<NestedIndex>,
    /// Image manifests reached from `index.json`, in the order found, each once.
    pub manifests: Vec<ImageManifest>,
    /// The images of `manifest.json`, when present.
    pub docker_images: Vec<DockerImage>,
    /// Every blob under `blobs/sha256/`, sorted by digest.
    pub blobs: Vec<Blob>,
}

impl Layout {
    /// The manifest with this digest.
    pub fn manifest_by_digest(&self, digest: &Digest) -> Option<&ImageManifest> {
        self.manifests.iter().find(|m| m.digest() == digest)
    }

    /// The first manifest (attestations excluded) whose platform `wanted`
    /// [matches](Platform::matches).
    pub fn manifest_by_platform(&self, wanted: &Platform) -> Option<&ImageManifest> {
        self.manifests
            .iter()
            .find(|m| !m.is_attestation() && m.platform.as_ref().is_some_and(|p| wanted.matches(p)))
    }

    /// The nested index with this digest.
    pub fn index_by_digest(&self, digest: &Digest) -> Option<&NestedIndex> {
        self.indexes.iter().find(|i| &i.descriptor.digest == digest)
    }

    /// The Docker image whose config has this digest (the image id).
    pub fn docker_image_by_config(&self, digest: &Digest) -> Option<&DockerImage> {
        self.docker_images
            .iter()
            .find(|i| &i.config_digest == digest)
    }

    /// Every image name found: descriptor annotations on the way to manifests and
    /// indexes, and Docker `RepoTags`, without repeats.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let from_annotations = self
            .index
            .iter()
            .flat_map(|i| &i.manifests)
            .chain(self.indexes.iter().flat_map(|i| &i.index.manifests))
            .flat_map(names_in);
        let from_manifests = self
            .manifests
            .iter()
            .flat_map(|m| &m.names)
            .map(String::as_str);
        let from_tags = self
            .docker_images
            .iter()
            .flat_map(|i| &i.repo_tags)
            .map(String::as_str);
        for name in from_annotations.chain(from_manifests).chain(from_tags) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// The image names a descriptor's annotations carry, full names first.
pub(crate) fn names_in(descriptor: &Descriptor) -> impl Iterator<Item = &str> {
    [annotation::CONTAINERD_IMAGE_NAME, annotation::REF_NAME]
        .into_iter()
        .filter_map(|key| descriptor.annotations.get(key))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parses_displays_and_matches() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(arm, Platform::new("linux", "arm").with_variant("v7"));
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());

        let arm64 = Platform::new("linux", "arm64");
        assert!(arm64.matches(&Platform::new("linux", "arm64").with_variant("v8")));
        assert!(!arm.matches(&Platform::new("linux", "arm").with_variant("v6")));
        assert!(!arm64.matches(&Platform::new("linux", "amd64")));
    }

    #[test]
    fn docker_config_with_nulls_parses() {
        let config: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],
                "Entrypoint":null,"Labels":null,"WorkingDir":""},
                "rootfs":{"type":"layers","diff_ids":null}}"#,
        )
        .unwrap();
        assert_eq!(config.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(config.config.entrypoint, None);
        assert!(config.config.env.is_empty() && config.config.labels.is_empty());
        assert!(config.rootfs.diff_ids.is_empty());
        assert_eq!(config.platform(), Some(Platform::new("linux", "amd64")));
    }
}
