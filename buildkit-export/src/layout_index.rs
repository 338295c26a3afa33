//! Keeping `index.json` of a client-side OCI image layout, as BuildKit's client does
//! after a solve: for a local cache (the cache manifest under a tag) and for an OCI
//! layout directory export (the image under its names).

use std::path::Path;

use serde_json::{Map, Value};

use crate::oci::{Digest, annotation, media_type};

/// How a descriptor is named in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefName {
    /// A bare tag: `org.opencontainers.image.ref.name` only.
    Tag(String),
    /// A full image name: `io.containerd.image.name`, and its tag (or digest) as
    /// `org.opencontainers.image.ref.name`.
    Image(String),
}

impl RefName {
    /// `(io.containerd.image.name, org.opencontainers.image.ref.name)`; an empty
    /// image name means none.
    fn annotations(&self) -> (&str, String) {
        match self {
            Self::Tag(t) => ("", t.clone()),
            Self::Image(n) => (n.as_str(), oci_ref_name(n)),
        }
    }
}

/// The OCI reference name of a full image name: what follows the repository (`1` of
/// `example.com/app:1`, `@sha256:...` of a digest reference), as containerd's
/// reference parser splits it.
fn oci_ref_name(name: &str) -> String {
    if name.contains("://") {
        return name.to_string();
    }
    let Some((_host, path)) = name.split_once('/') else {
        return String::new();
    };
    if path.split('/').any(|p| p == "..") {
        return name.to_string();
    }
    match path.find([':', '@']) {
        Some(i) => {
            let object = &path[i..];
            object.strip_prefix(':').unwrap_or(object).to_string()
        }
        None => String::new(),
    }
}

fn annotation_of<'a>(desc: &'a Value, key: &str) -> &'a str {
    desc.get("annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The digest `dir/index.json` records for `tag`: a manifest whose
/// `io.containerd.image.name` is `tag`, else one whose
/// `org.opencontainers.image.ref.name` is.
pub(crate) fn lookup(dir: &Path, tag: &str) -> Result<Option<String>, String> {
    let path = dir.join("index.json");
    let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let index: Value =
        serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let by = |key: &str| {
        manifests
            .iter()
            .find(|m| annotation_of(m, key) == tag)
            .and_then(|m| m.get("digest"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(by(annotation::CONTAINERD_IMAGE_NAME).or_else(|| by(annotation::REF_NAME)))
}

/// Adds the descriptor `desc` (JSON) to `dir/index.json` once per name, replacing
/// what each name named before, and writes `oci-layout`. Returns the digest.
///
/// The read-modify-write holds an exclusive `flock` on `index.json.lock`, as
/// BuildKit's own client does, so concurrent exports to one layout (ours or
/// buildctl's) never lose each other's entries.
pub(crate) async fn put(dir: &Path, desc: &str, names: &[RefName]) -> Result<String, String> {
    let dir = dir.to_path_buf();
    let desc = desc.to_string();
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        let _lock = lock(&dir)?;
        put_locked(&dir, &desc, &names)
    })
    .await
    .map_err(|e| format!("updating index.json: {e}"))?
}

/// An exclusive lock on `dir/index.json.lock`, released when dropped (closed).
fn lock(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("index.json.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    loop {
        // SAFETY: a valid open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("locking {}: {e}", path.display()));
        }
    }
}

fn put_locked(dir: &Path, desc: &str, names: &[RefName]) -> Result<String, String> {
    let desc: Value =
        serde_json::from_str(desc).map_err(|e| format!("the descriptor {desc:?}: {e}"))?;
    if !desc.is_object() {
        return Err(format!("the descriptor {desc} is not an object"));
    }
    let digest = desc
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the descriptor {desc} has no digest"))?
        .parse::<Digest>()
        .map_err(|e| format!("the descriptor's digest: {e}"))?;

    let index_path = dir.join("index.json");
    let mut index: Value = match std::fs::read(&index_path) {
        Ok(data) if !data.is_empty() => {
            serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", index_path.display()))?
        }
        Ok(_) => Value::Object(Map::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Map::new()),
        Err(e) => return Err(format!("{}: {e}", index_path.display())),
    };
    let index_obj = index
        .as_object_mut()
        .ok_or_else(|| format!("{} is not a JSON object", index_path.display()))?;
    if index_obj
        .get("schemaVersion")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        == 0
    {
        index_obj.insert("schemaVersion".into(), Value::from(2));
    }
    if index_obj
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        index_obj.insert("mediaType".into(), Value::from(media_type::OCI_INDEX));
    }
    let mut manifests: Vec<Value> = match index_obj.remove("manifests") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    for name in names {
        let (image_name, ref_name) = name.annotations();
        // The name moves: drop what it named before.
        manifests.retain(|m| {
            annotation_of(m, annotation::REF_NAME) != ref_name
                || annotation_of(m, annotation::CONTAINERD_IMAGE_NAME) != image_name
        });
        let mut named = desc.clone();
        let obj = named.as_object_mut().expect("checked above");
        let annotations = obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        let annotations = annotations.as_object_mut().expect("an object");
        if !image_name.is_empty() {
            annotations.insert(
                annotation::CONTAINERD_IMAGE_NAME.into(),
                Value::from(image_name),
            );
        }
        annotations.insert(annotation::REF_NAME.into(), Value::from(ref_name));
        manifests.push(named);
    }
    index_obj.insert("manifests".into(), Value::Array(manifests));

    write_atomically(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let data = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    write_atomically(&index_path, &data)?;
    Ok(digest.as_str().to_string())
}

/// Writes `path` through a temporary file and a rename, so readers never see half.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(hex: char) -> String {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":123}}"#,
            hex.to_string().repeat(64)
        )
    }

    fn tag(t: &str) -> RefName {
        RefName::Tag(t.into())
    }

    #[tokio::test]
    async fn tags_are_recorded_replaced_and_kept_apart() {
        let d = tempfile::tempdir().unwrap();
        let a = put(d.path(), &desc('a'), &[tag("latest")]).await.unwrap();
        assert_eq!(a, format!("sha256:{}", "a".repeat(64)));
        put(d.path(), &desc('b'), &[tag("other")]).await.unwrap();
        put(d.path(), &desc('c'), &[tag("latest")]).await.unwrap();

        let index: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], media_type::OCI_INDEX);
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{index}");
        assert_eq!(m[1]["size"], 123);
        assert_eq!(
            lookup(d.path(), "latest").unwrap(),
            Some(format!("sha256:{}", "c".repeat(64)))
        );
        assert_eq!(
            lookup(d.path(), "other").unwrap(),
            Some(format!("sha256:{}", "b".repeat(64)))
        );
        assert_eq!(lookup(d.path(), "none").unwrap(), None);
        let layout = std::fs::read_to_string(d.path().join("oci-layout")).unwrap();
        assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    }

    #[tokio::test]
    async fn image_names_carry_both_annotations() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            RefName::Image("docker.io/library/app:1".into()),
            RefName::Image("example.com:5000/team/app:2".into()),
        ];
        put(d.path(), &desc('a'), &names).await.unwrap();
        // A bare tag equal to an image's tag is a different entry.
        put(d.path(), &desc('b'), &[tag("1")]).await.unwrap();
        put(d.path(), &desc('c'), &names[..1]).await.unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("index.json")).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{index}");
        let find = |name: &str| {
            m.iter()
                .find(|e| annotation_of(e, annotation::CONTAINERD_IMAGE_NAME) == name)
                .unwrap()
        };
        let app1 = find("docker.io/library/app:1");
        assert_eq!(annotation_of(app1, annotation::REF_NAME), "1");
        assert!(app1["digest"].as_str().unwrap().ends_with('c'));
        let app2 = find("example.com:5000/team/app:2");
        assert_eq!(annotation_of(app2, annotation::REF_NAME), "2");
        assert_eq!(
            lookup(d.path(), "docker.io/library/app:1").unwrap(),
            Some(format!("sha256:{}", "c".repeat(64)))
        );
    }

    #[test]
    fn reference_names() {
        assert_eq!(oci_ref_name("docker.io/library/app:1"), "1");
        assert_eq!(oci_ref_name("localhost:5000/app"), "");
        assert_eq!(
            oci_ref_name("example.com/app@sha256:abc"),
            "@sha256:abc".to_string()
        );
        assert_eq!(oci_ref_name("x://y"), "x://y");
    }

    #[tokio::test]
    async fn bad_descriptors_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in [
            "not json",
            r#"{"digest":"sha256:../x"}"#,
            r#"{"size":1}"#,
            "[]",
        ] {
            assert!(put(d.path(), bad, &[tag("latest")]).await.is_err(), "{bad}");
        }
        assert!(!d.path().join("index.json").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_keep_every_entry() {
        let d = tempfile::tempdir().unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let dir = d.path().to_path_buf();
                tokio::spawn(async move {
                    let hex = char::from_digit(i % 16, 16).unwrap();
                    put(&dir, &desc(hex), &[tag(&format!("t{i}"))]).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let index: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 16, "{index}");
    }
}
