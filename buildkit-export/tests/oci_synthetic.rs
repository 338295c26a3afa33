//! The OCI reader on hand-made archives: well-formed ones it must accept, and broken
//! or hostile ones it must refuse with an error that names the failure and the entry.
//! (Outputs of real daemons are covered in `tests/tests/oci_reader.rs`.)

use buildkit_export::oci::{self, Digest, ErrorKind, Platform, Reader};
use serde_json::json;

/// A minimal ustar writer, so tests control every header byte (`..`, links, long names).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(&mut self, name: &[u8], kind: u8, link: &str, data: &[u8]) -> &mut Self {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), b'0', "", data)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.resize(out.len() + 1024, 0);
        out
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len()})
}

/// A one-layer image behind a nested index, as BuildKit writes it.
struct Image {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    nested: Vec<u8>,
    index: Vec<u8>,
}

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn plain_layer() -> Vec<u8> {
    Tar::default().file("hello", b"hi\n").finish()
}

async fn gzip(bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::write::GzipEncoder;
    use tokio::io::AsyncWriteExt;
    let mut encoder = GzipEncoder::new(Vec::new());
    encoder.write_all(bytes).await.unwrap();
    encoder.shutdown().await.unwrap();
    encoder.into_inner()
}

fn image_with(layer: Vec<u8>, media_type: &str, diff_id: &Digest, layer_size_delta: i64) -> Image {
    let config = serde_json::to_vec(&json!({
        "architecture": "arm64", "variant": "v8", "os": "linux",
        "config": {"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"l": "v"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    }))
    .unwrap();
    let mut layer_desc = descriptor(media_type, &layer);
    layer_desc["size"] = json!(layer.len() as i64 + layer_size_delta);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": oci::media_type::OCI_MANIFEST,
        "config": descriptor(oci::media_type::OCI_CONFIG, &config),
        "layers": [layer_desc]
    }))
    .unwrap();
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [descriptor(oci::media_type::OCI_MANIFEST, &manifest)]
    }))
    .unwrap();
    let mut nested_desc = descriptor(oci::media_type::OCI_INDEX, &nested);
    nested_desc["annotations"] = json!({
        "io.containerd.image.name": "example.com/app:1",
        "org.opencontainers.image.ref.name": "1"
    });
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [nested_desc]})).unwrap();
    Image {
        layer,
        config,
        manifest,
        nested,
        index,
    }
}

fn image() -> Image {
    let layer = plain_layer();
    image_with(layer.clone(), LAYER_TAR, &Digest::of(&layer), 0)
}

/// The image as an OCI tar; `skip` leaves one blob out.
fn oci_tar(img: &Image, skip: Option<&Digest>) -> Vec<u8> {
    let mut tar = Tar::default();
    for blob in [&img.layer, &img.config, &img.manifest, &img.nested] {
        let d = Digest::of(blob);
        if Some(&d) != skip {
            tar.file(&d.blob_path(), blob);
        }
    }
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", &img.index)
        .finish()
}

async fn read(bytes: Vec<u8>) -> Result<oci::Layout, oci::Error> {
    oci::read_tar(&bytes[..]).await
}

#[tokio::test]
async fn hand_made_oci_tar_reads_through_a_nested_index() {
    let img = image();
    let layout = read(oci_tar(&img, None)).await.unwrap();
    assert_eq!(layout.layout_version.as_deref(), Some("1.0.0"));
    assert_eq!(layout.blobs.len(), 4);
    assert_eq!(layout.indexes.len(), 1);
    assert_eq!(layout.manifests.len(), 1);

    let m = layout
        .manifest_by_platform(&Platform::new("linux", "arm64"))
        .expect("platform from the config");
    assert_eq!(m.digest(), &Digest::of(&img.manifest));
    assert_eq!(
        m.parent.as_ref(),
        Some(&layout.indexes[0].descriptor.digest)
    );
    assert_eq!(
        m.platform,
        Some(Platform::new("linux", "arm64").with_variant("v8"))
    );
    assert!(m.diff_ids_verified);
    assert_eq!(m.names, ["example.com/app:1", "1"]);
    let config = m.config.as_ref().unwrap();
    assert_eq!(config.config.env, ["A=1"]);
    assert_eq!(config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(config.config.labels["l"], "v");
    assert!(layout.manifest_by_digest(&Digest::of(b"other")).is_none());
    assert!(
        layout
            .manifest_by_platform(&Platform::new("linux", "amd64"))
            .is_none()
    );
    assert_eq!(layout.names(), ["example.com/app:1", "1"]);
}

#[tokio::test]
async fn hand_made_layout_dir_reads_like_its_tar() {
    let img = image();
    let bytes = oci_tar(&img, None);
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("image.tar");
    std::fs::write(&tar_path, &bytes).unwrap();
    let root = dir.path().join("layout");
    std::fs::create_dir(&root).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let from_dir = oci::read_path(&root).await.unwrap();
    assert_eq!(from_dir, oci::read_path(&tar_path).await.unwrap());
    assert_eq!(from_dir, Reader::new().read_dir(&root).await.unwrap());
}

#[tokio::test]
async fn wrong_diff_id_is_reported_with_the_layer() {
    let img = image_with(plain_layer(), LAYER_TAR, &Digest::of(b"not the layer"), 0);
    let err = read(oci_tar(&img, None)).await.unwrap_err();
    assert!(err.is_mismatch(), "{err}");
    assert_eq!(
        err.kind(),
        &ErrorKind::DiffIdMismatch {
            layer: Some(0),
            expected: Digest::of(b"not the layer").to_string(),
            actual: Digest::of(&img.layer).to_string(),
        }
    );
    assert_eq!(
        err.entry(),
        Some(Digest::of(&img.layer).blob_path().as_str())
    );
}

#[tokio::test]
async fn gzip_layers_are_checked_against_diff_ids_unless_turned_off() {
    let plain = plain_layer();
    let gz = gzip(&plain).await;
    let good = oci_tar(
        &image_with(gz.clone(), LAYER_TAR_GZIP, &Digest::of(&plain), 0),
        None,
    );
    let layout = read(good.clone()).await.unwrap();
    assert!(layout.manifests[0].diff_ids_verified);
    let layout = Reader::new()
        .verify_gzip_diff_ids(false)
        .read_tar(&good[..])
        .await
        .unwrap();
    assert!(!layout.manifests[0].diff_ids_verified);

    let wrong = Digest::of(b"not the layer");
    let bad = oci_tar(&image_with(gz.clone(), LAYER_TAR_GZIP, &wrong, 0), None);
    let err = read(bad.clone()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::DiffIdMismatch {
            layer: Some(0),
            expected: wrong.to_string(),
            actual: Digest::of(&plain).to_string(),
        }
    );
    // Without decompression the mismatch cannot be seen, and is not claimed checked.
    let layout = Reader::new()
        .verify_gzip_diff_ids(false)
        .read_tar(&bad[..])
        .await
        .unwrap();
    assert!(!layout.manifests[0].diff_ids_verified);

    // zstd is not decompressed: read, but not claimed checked.
    let zstd = [&[0x28, 0xb5, 0x2f, 0xfd][..], b"frame"].concat();
    let img = image_with(
        zstd,
        "application/vnd.oci.image.layer.v1.tar+zstd",
        &wrong,
        0,
    );
    let layout = read(oci_tar(&img, None)).await.unwrap();
    assert!(!layout.manifests[0].diff_ids_verified);
}

#[tokio::test]
async fn wrong_descriptor_size_is_reported() {
    let layer = plain_layer();
    let img = image_with(layer.clone(), LAYER_TAR, &Digest::of(&layer), 1);
    let err = read(oci_tar(&img, None)).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::SizeMismatch {
            expected: layer.len() as u64 + 1,
            actual: layer.len() as u64
        }
    );
    assert_eq!(err.entry(), Some(Digest::of(&layer).blob_path().as_str()));
}

#[tokio::test]
async fn missing_config_names_the_manifest_that_wants_it() {
    let img = image();
    let config = Digest::of(&img.config);
    let err = read(oci_tar(&img, Some(&config))).await.unwrap_err();
    assert!(err.is_missing(), "{err}");
    assert_eq!(
        err.kind(),
        &ErrorKind::MissingBlob {
            digest: config.clone(),
            referenced_by: format!("manifest {}", Digest::of(&img.manifest)),
        }
    );
    assert!(err.to_string().contains(config.as_str()), "{err}");
}

#[tokio::test]
async fn blob_whose_content_does_not_match_its_name_is_reported() {
    let named = Digest::of(b"what the name promises");
    let bytes = Tar::default()
        .file(&named.blob_path(), b"something else")
        .file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::DigestMismatch {
            expected: named.clone(),
            actual: Digest::of(b"something else")
        }
    );
    assert_eq!(err.entry(), Some(named.blob_path().as_str()));
    let msg = err.to_string();
    assert!(
        msg.contains("digest mismatch") && msg.contains(named.hex()),
        "{msg}"
    );
}

#[tokio::test]
async fn paths_that_climb_out_or_are_absolute_are_refused() {
    for name in ["../evil", "blobs/../../evil", "/etc/passwd"] {
        let bytes = Tar::default().file(name, b"x").finish();
        let err = read(bytes).await.unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::UnsafePath {
                path: name.to_string()
            },
            "{name}: {err}"
        );
    }
    let link = Digest::of(b"x").blob_path();
    let bytes = Tar::default()
        .entry(link.as_bytes(), b'2', "../../../etc/passwd", b"")
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::UnsafePath { .. }), "{err}");
    assert_eq!(err.entry(), Some(link.as_str()));
}

#[tokio::test]
async fn huge_json_is_refused_with_the_limit_named() {
    let mut doc = br#"{"schemaVersion":2,"manifests":[],"pad":""#.to_vec();
    doc.resize(9 << 20, b'a');
    doc.extend_from_slice(b"\"}");
    let bytes = Tar::default().file("index.json", &doc).finish();
    let err = read(bytes).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TooLarge {
            what: "JSON document".into(),
            size: doc.len() as u64,
            limit: 8 << 20
        }
    );
    assert_eq!(err.entry(), Some("index.json"));

    // Many small documents add up too.
    let img = image();
    let err = Reader::new()
        .max_total_json(500)
        .read_tar(&oci_tar(&img, None)[..])
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");

    // So do many entries.
    let err = Reader::new()
        .max_entries(3)
        .read_tar(&oci_tar(&img, None)[..])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TooLarge {
                size: 4,
                limit: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn huge_tar_long_name_is_refused_without_buffering_it() {
    let long = vec![b'a'; 4 << 20];
    let bytes = Tar::default()
        .entry(b"././@LongLink", b'L', "", &long)
        .file("short", b"x")
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("tar headers"), "{err}");
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[tokio::test]
async fn pax_paths_and_sizes_and_gnu_long_names_are_honoured() {
    let img = image();
    let layer = Digest::of(&img.layer);
    // The layer's blob, named by a GNU long name entry, with an empty ustar name.
    let mut tar = Tar::default();
    tar.entry(b"././@LongLink", b'L', "", layer.blob_path().as_bytes())
        .entry(b"", b'0', "", &img.layer);
    // index.json, named and sized by PAX records; the ustar header says 0 bytes, as
    // Go's archive/tar writes sizes that do not fit it.
    let pax = [
        pax_record("path", "./index.json"),
        pax_record("size", &img.index.len().to_string()),
    ]
    .concat();
    tar.entry(b"PaxHeaders/x", b'x', "", &pax);
    let mut header_says_empty = Tar::default();
    header_says_empty.entry(b"placeholder", b'0', "", b"");
    let mut fake = header_says_empty.0;
    fake.truncate(512);
    tar.0.extend_from_slice(&fake);
    tar.0.extend_from_slice(&img.index);
    tar.0.resize(tar.0.len().next_multiple_of(512), 0);
    for blob in [&img.config, &img.manifest, &img.nested] {
        tar.file(&Digest::of(blob).blob_path(), blob);
    }
    let layout = read(tar.finish()).await.unwrap();
    assert!(layout.blobs.iter().any(|b| b.digest == layer));
    assert_eq!(layout.manifests.len(), 1);
    assert!(layout.manifests[0].diff_ids_verified);
}

#[tokio::test]
async fn garbage_truncated_and_empty_inputs_give_errors() {
    let err = read(vec![0x5a; 4096]).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Io, "{err}");

    let img = image();
    let mut bytes = oci_tar(&img, None);
    bytes.truncate(700);
    let err = read(bytes).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Io | ErrorKind::Invalid { .. }),
        "{err}"
    );

    let err = read(Tar::default().finish()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotAnImage);
    let err = read(Vec::new()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotAnImage);

    // A directory that is no layout is refused before anything in it is read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let err = oci::read_path(dir.path()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotAnImage);
    assert_eq!(err.archive(), Some(dir.path()));
}

#[tokio::test]
async fn duplicate_entries_and_bad_json_are_refused() {
    let bytes = Tar::default()
        .file("index.json", b"{}")
        .file("./index.json", b"{}")
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Invalid { .. }), "{err}");
    assert_eq!(err.entry(), Some("index.json"));

    let bytes = Tar::default()
        .file("index.json", br#"{"schemaVersion":"two"}"#)
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidJson);
    assert_eq!(err.entry(), Some("index.json"));
}

/// A `docker save` style archive: `<hex>.json` config, `<id>/layer.tar` layers, and a
/// second image whose layer is a symlink to the first one's (Docker dedupes so).
fn docker_tar(diff_id: Option<Digest>) -> (Vec<u8>, Digest, Vec<u8>) {
    let layer = Tar::default().file("hello", b"hi\n").finish();
    let diff_id = diff_id.unwrap_or_else(|| Digest::of(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": null, "Env": null},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    }))
    .unwrap();
    let config_digest = Digest::of(&config);
    let config_name = format!("{}.json", config_digest.hex());
    let manifest = serde_json::to_vec(&json!([
        {"Config": config_name, "RepoTags": ["app:1"], "Layers": ["aaa/layer.tar"]},
        {"Config": config_name, "RepoTags": null, "Layers": ["bbb/layer.tar"]}
    ]))
    .unwrap();
    let bytes = Tar::default()
        .file("aaa/layer.tar", &layer)
        .entry(b"bbb/layer.tar", b'2', "../aaa/layer.tar", b"")
        .file(&config_name, &config)
        .file("manifest.json", &manifest)
        .finish();
    (bytes, config_digest, layer)
}

#[tokio::test]
async fn hand_made_docker_tar_verifies_diff_ids_through_links() {
    let (bytes, config, layer) = docker_tar(None);
    let layout = read(bytes).await.unwrap();
    assert!(layout.index.is_none() && layout.manifests.is_empty());
    assert_eq!(layout.docker_images.len(), 2);
    let image = layout.docker_image_by_config(&config).unwrap();
    assert_eq!(image.repo_tags, ["app:1"]);
    assert!(image.diff_ids_verified);
    assert_eq!(image.layers[0].path, "aaa/layer.tar");
    assert_eq!(image.layers[0].diff_id, Digest::of(&layer));
    assert_eq!(layout.docker_images[1].layers[0].path, "bbb/layer.tar");
    assert_eq!(layout.docker_images[1].layers[0].digest, Digest::of(&layer));
    assert_eq!(layout.names(), ["app:1"]);
}

#[tokio::test]
async fn docker_tar_with_wrong_diff_id_names_the_layer_tar() {
    let wrong = Digest::of(b"nope");
    let (bytes, _, layer) = docker_tar(Some(wrong.clone()));
    let err = read(bytes).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::DiffIdMismatch {
            layer: Some(0),
            expected: wrong.to_string(),
            actual: Digest::of(&layer).to_string()
        }
    );
    assert_eq!(err.entry(), Some("aaa/layer.tar"));
}

#[tokio::test]
async fn docker_config_that_does_not_hash_to_its_name_is_reported() {
    let named = Digest::of(b"promised");
    let manifest = serde_json::to_vec(&json!([
        {"Config": format!("{}.json", named.hex()), "RepoTags": [], "Layers": []}
    ]))
    .unwrap();
    let bytes = Tar::default()
        .file(&format!("{}.json", named.hex()), b"{}")
        .file("manifest.json", &manifest)
        .finish();
    let err = read(bytes).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::DigestMismatch {
            expected: named,
            actual: Digest::of(b"{}")
        }
    );

    let manifest = br#"[{"Config":"../x.json","Layers":[]}]"#;
    let err = read(Tar::default().file("manifest.json", manifest).finish())
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::UnsafePath { .. }), "{err}");

    let manifest = br#"[{"Config":"gone.json","Layers":[]}]"#;
    let err = read(Tar::default().file("manifest.json", manifest).finish())
        .await
        .unwrap_err();
    assert!(err.is_missing(), "{err}");
    assert_eq!(err.entry(), Some("gone.json"));
}
