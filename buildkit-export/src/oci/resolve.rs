//! Second pass: from what the walk recorded, follow `index.json` and `manifest.json`
//! to every index, manifest, config and layer, checking each reference.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::collect::{FileRecord, Files, Limits, Uncompressed, normalize};
use super::model::{media_type, names_in};
use super::{
    Blob, Descriptor, Digest, DockerImage, DockerLayer, Error, ErrorKind, ImageConfig,
    ImageManifest, Index, Layout, Manifest, NestedIndex,
};

/// Deeper nesting than this is refused (BuildKit nests one level).
const MAX_INDEX_DEPTH: usize = 8;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayoutFile {
    image_layout_version: String,
}

/// One element of a Docker archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Option<Vec<String>>,
}

pub(crate) fn resolve(files: &Files, limits: Limits) -> Result<Layout, Error> {
    let layout_version = match files.get("oci-layout")? {
        Some((path, record)) => {
            Some(parse::<OciLayoutFile>(path, record, limits)?.image_layout_version)
        }
        None => None,
    };
    let index = match files.get("index.json")? {
        Some((path, record)) => Some(parse::<Index>(path, record, limits)?),
        None => None,
    };
    let docker_entries = match files.get("manifest.json")? {
        Some((path, record)) => Some(parse::<Vec<DockerEntry>>(path, record, limits)?),
        None => None,
    };
    if index.is_none() && docker_entries.is_none() {
        return Err(Error::new(ErrorKind::NotAnImage));
    }

    let mut blobs = Vec::new();
    for path in files.blob_paths() {
        let (_, record) = files.get(path)?.expect("listed paths exist");
        let named = Digest::from_hex(&path["blobs/sha256/".len()..]).expect("checked on insert");
        if record.digest != named {
            return Err(Error::new(ErrorKind::DigestMismatch {
                expected: named,
                actual: record.digest.clone(),
            })
            .at_entry(path));
        }
        blobs.push(Blob {
            digest: named,
            size: record.size,
        });
    }

    let mut layout = Layout {
        layout_version,
        index: None,
        indexes: Vec::new(),
        manifests: Vec::new(),
        docker_images: Vec::new(),
        blobs,
    };
    if let Some(index) = index {
        walk_index(files, limits, &index, &mut layout)?;
        layout.index = Some(index);
    }
    for (n, entry) in docker_entries.into_iter().flatten().enumerate() {
        let image = docker_image(files, limits, entry, n)?;
        layout.docker_images.push(image);
    }
    for manifest in &mut layout.manifests {
        let tags = layout
            .docker_images
            .iter()
            .filter(|i| i.config_digest == manifest.manifest.config.digest)
            .flat_map(|i| &i.repo_tags);
        for tag in tags {
            push_name(&mut manifest.names, tag);
        }
    }
    Ok(layout)
}

fn push_name(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// Parses a JSON document the walk kept in memory.
fn parse<T: DeserializeOwned>(path: &str, record: &FileRecord, limits: Limits) -> Result<T, Error> {
    let Some(json) = &record.json else {
        let err = if record.size > limits.max_json_size {
            Error::new(ErrorKind::TooLarge {
                what: "JSON document".into(),
                size: record.size,
                limit: limits.max_json_size,
            })
        } else {
            Error::new(ErrorKind::InvalidJson).with_source("it does not start with `{` or `[`")
        };
        return Err(err.at_entry(path));
    };
    serde_json::from_slice(json).map_err(|e| {
        Error::new(ErrorKind::InvalidJson)
            .with_source(e)
            .at_entry(path)
    })
}

/// The blob a descriptor references, checked against its size and digest. `None` only
/// for an absent non-distributable blob (one with `urls`) when `may_be_absent`.
fn blob<'a>(
    files: &'a Files,
    descriptor: &Descriptor,
    referenced_by: &str,
    may_be_absent: bool,
) -> Result<Option<(String, &'a FileRecord)>, Error> {
    let path = descriptor.digest.blob_path();
    let Some((_, record)) = files.get(&path)? else {
        if may_be_absent && !descriptor.urls.is_empty() {
            return Ok(None);
        }
        return Err(Error::new(ErrorKind::MissingBlob {
            digest: descriptor.digest.clone(),
            referenced_by: referenced_by.to_string(),
        })
        .at_entry(path));
    };
    if record.digest != descriptor.digest {
        return Err(Error::new(ErrorKind::DigestMismatch {
            expected: descriptor.digest.clone(),
            actual: record.digest.clone(),
        })
        .at_entry(path));
    }
    if record.size != descriptor.size {
        return Err(Error::new(ErrorKind::SizeMismatch {
            expected: descriptor.size,
            actual: record.size,
        })
        .at_entry(path));
    }
    Ok(Some((path, record)))
}

struct Pending {
    descriptor: Descriptor,
    parent: Option<Digest>,
    names: Vec<String>,
    referenced_by: String,
    depth: usize,
}

fn children(
    index: &Index,
    parent: Option<&Digest>,
    names: &[String],
    depth: usize,
) -> Vec<Pending> {
    let referenced_by = match parent {
        Some(digest) => format!("index {digest}"),
        None => "index.json".to_string(),
    };
    index
        .manifests
        .iter()
        .map(|d| {
            let mut names = names.to_vec();
            for name in names_in(d) {
                push_name(&mut names, name);
            }
            Pending {
                descriptor: d.clone(),
                parent: parent.cloned(),
                names,
                referenced_by: referenced_by.clone(),
                depth,
            }
        })
        .collect()
}

fn walk_index(
    files: &Files,
    limits: Limits,
    root: &Index,
    layout: &mut Layout,
) -> Result<(), Error> {
    // Where each digest already is in `layout`, so that repeats cost O(1).
    let mut seen_indexes = HashSet::new();
    let mut seen_manifests = HashMap::new();
    // Depth first, in document order: a stack holding children reversed.
    let mut stack = children(root, None, &[], 1);
    stack.reverse();
    while let Some(item) = stack.pop() {
        let descriptor = &item.descriptor;
        let digest = &descriptor.digest;
        if media_type::is_index(&descriptor.media_type) {
            if !seen_indexes.insert(digest.clone()) {
                continue;
            }
            if item.depth > MAX_INDEX_DEPTH {
                return Err(Error::invalid(format!(
                    "indexes are nested more than {MAX_INDEX_DEPTH} deep"
                ))
                .at_entry(digest.blob_path()));
            }
            let (path, record) = blob(files, descriptor, &item.referenced_by, false)?
                .expect("indexes may not be absent");
            let index: Index = parse(&path, record, limits)?;
            let mut next = children(&index, Some(digest), &item.names, item.depth + 1);
            next.reverse();
            stack.extend(next);
            layout.indexes.push(NestedIndex {
                descriptor: descriptor.clone(),
                parent: item.parent,
                index,
            });
        } else if media_type::is_manifest(&descriptor.media_type) {
            if let Some(&at) = seen_manifests.get(digest) {
                let seen: &mut ImageManifest = &mut layout.manifests[at];
                for name in &item.names {
                    push_name(&mut seen.names, name);
                }
                continue;
            }
            seen_manifests.insert(digest.clone(), layout.manifests.len());
            let manifest = image_manifest(files, limits, item)?;
            layout.manifests.push(manifest);
        } else {
            // Something this reader does not model (an artifact): it must still be there.
            blob(files, descriptor, &item.referenced_by, false)?;
        }
    }
    Ok(())
}

fn image_manifest(files: &Files, limits: Limits, item: Pending) -> Result<ImageManifest, Error> {
    let descriptor = item.descriptor;
    let (path, record) =
        blob(files, &descriptor, &item.referenced_by, false)?.expect("manifests may not be absent");
    let manifest: Manifest = parse(&path, record, limits)?;
    let referenced_by = format!("manifest {}", descriptor.digest);

    let (config_path, config_record) =
        blob(files, &manifest.config, &referenced_by, false)?.expect("configs may not be absent");
    let config = if media_type::is_image_config(&manifest.config.media_type) {
        Some(parse::<ImageConfig>(&config_path, config_record, limits)?)
    } else {
        None
    };

    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        layers.push(blob(files, layer, &referenced_by, true)?);
    }
    let diff_ids_verified = match &config {
        Some(config) => check_diff_ids(config, &config_path, &layers)?,
        None => false,
    };

    let platform = descriptor
        .platform
        .clone()
        .or_else(|| config.as_ref().and_then(ImageConfig::platform));
    Ok(ImageManifest {
        descriptor,
        parent: item.parent,
        manifest,
        config,
        platform,
        names: item.names,
        diff_ids_verified,
    })
}

/// Checks each layer whose uncompressed digest is known against the config's diff ids;
/// returns whether all of them were known.
fn check_diff_ids(
    config: &ImageConfig,
    config_path: &str,
    layers: &[Option<(String, &FileRecord)>],
) -> Result<bool, Error> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(Error::new(ErrorKind::DiffIdMismatch {
            layer: None,
            expected: diff_ids.len().to_string(),
            actual: layers.len().to_string(),
        })
        .at_entry(config_path));
    }
    let mut all = true;
    for (n, (layer, expected)) in layers.iter().zip(diff_ids).enumerate() {
        let Some((path, record)) = layer else {
            all = false;
            continue;
        };
        let actual = match &record.uncompressed {
            Uncompressed::Same => &record.digest,
            Uncompressed::Gzip(Ok(digest)) => digest,
            Uncompressed::Gzip(Err(e)) => {
                return Err(
                    Error::invalid(format!("layer {n} is not a valid gzip stream: {e}"))
                        .at_entry(path.as_str()),
                );
            }
            Uncompressed::Unknown => {
                all = false;
                continue;
            }
        };
        if actual != expected {
            return Err(Error::new(ErrorKind::DiffIdMismatch {
                layer: Some(n),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
            .at_entry(path.as_str()));
        }
    }
    Ok(all)
}

fn docker_image(
    files: &Files,
    limits: Limits,
    entry: DockerEntry,
    n: usize,
) -> Result<DockerImage, Error> {
    let referenced_by = format!("manifest.json image {n}");
    let file = |raw: &str| -> Result<(String, &FileRecord), Error> {
        let path = normalize(raw).map_err(|e| e.at_entry("manifest.json"))?;
        match files.get(&path)? {
            Some((_, record)) => Ok((path, record)),
            None => Err(Error::new(ErrorKind::MissingFile {
                path: path.clone(),
                referenced_by: referenced_by.clone(),
            })
            .at_entry(path)),
        }
    };

    let (config_path, config_record) = file(&entry.config)?;
    // Docker names the config after its digest (`<hex>.json`); blobs were checked already.
    if let Some(named) = config_path
        .strip_suffix(".json")
        .and_then(Digest::from_hex)
        .filter(|named| named != &config_record.digest)
    {
        return Err(Error::new(ErrorKind::DigestMismatch {
            expected: named,
            actual: config_record.digest.clone(),
        })
        .at_entry(config_path));
    }
    let config: ImageConfig = parse(&config_path, config_record, limits)?;

    let mut found = Vec::new();
    for raw in entry.layers.iter().flatten() {
        let (path, record) = file(raw)?;
        found.push(Some((path, record)));
    }
    let diff_ids_verified = check_diff_ids(&config, &config_path, &found)?;
    let layers = found
        .into_iter()
        .flatten()
        .zip(&config.rootfs.diff_ids)
        .map(|((path, record), diff_id)| DockerLayer {
            path,
            digest: record.digest.clone(),
            size: record.size,
            diff_id: diff_id.clone(),
        })
        .collect();

    Ok(DockerImage {
        config_path,
        config_digest: config_record.digest.clone(),
        config,
        repo_tags: entry.repo_tags.unwrap_or_default(),
        layers,
        diff_ids_verified,
    })
}
