//! `buildkit_export::oci` reads what real daemons export: OCI tars, OCI layout
//! directories and Docker tars from buildkitd (via buildctl) and from `docker save`,
//! and reports corruption in copies of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use buildkit_export::oci::{self, Digest, ErrorKind, Platform};
use tempfile::TempDir;
use tests::TestEnv;

/// A build context with a Dockerfile that builds on the local registry's busybox.
fn context(env: &TestEnv) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}/busybox:local\nRUN echo hi > /x\n", env.registry),
    )
    .unwrap();
    dir
}

fn buildctl_args(env: &TestEnv, ctx: &Path, output: &str, extra: &[&str]) -> Vec<String> {
    let local = |name: &str| format!("{name}={}", ctx.display());
    let mut args: Vec<String> = [
        "--addr",
        &env.buildkit_host,
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &local("context"),
        "--local",
        &local("dockerfile"),
        "--output",
        output,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs buildctl to export `output`; returns the metadata file's JSON.
fn build(env: &TestEnv, ctx: &TempDir, output: &str, extra: &[&str]) -> serde_json::Value {
    let meta = ctx.path().join("metadata.json");
    let mut args = buildctl_args(env, ctx.path(), output, extra);
    args.extend(["--metadata-file".to_string(), meta.display().to_string()]);
    let out = Command::new(env.bin_dir.join("buildctl"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildctl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap()
}

fn meta_digest(meta: &serde_json::Value, key: &str) -> Digest {
    meta[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {meta}"))
        .parse()
        .unwrap()
}

/// `(name, data offset, size)` of every entry of a tar archive, from its headers.
fn tar_entries(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|&b| b != 0) {
        let header = &bytes[at..at + 512];
        let name =
            String::from_utf8(header[..100].split(|&b| b == 0).next().unwrap().to_vec()).unwrap();
        let size = std::str::from_utf8(&header[124..136])
            .unwrap()
            .trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size, 8).unwrap();
        entries.push((name, at + 512, size));
        at += 512 + size.next_multiple_of(512);
    }
    entries
}

/// The blob digests a tar holds, by entry name.
fn blob_names(bytes: &[u8]) -> BTreeSet<Digest> {
    tar_entries(bytes)
        .into_iter()
        .filter_map(|(name, _, _)| {
            let hex = name
                .trim_start_matches("./")
                .strip_prefix("blobs/sha256/")?;
            (!hex.is_empty()).then(|| format!("sha256:{hex}").parse().unwrap())
        })
        .collect()
}

/// The digests an image's index, manifests and configs reference, plus the manifests'.
fn referenced(layout: &oci::Layout) -> BTreeSet<Digest> {
    let mut all = BTreeSet::new();
    for index in &layout.indexes {
        all.insert(index.descriptor.digest.clone());
    }
    for m in &layout.manifests {
        all.insert(m.digest().clone());
        all.insert(m.manifest.config.digest.clone());
        all.extend(m.manifest.layers.iter().map(|l| l.digest.clone()));
    }
    all
}

fn blob_set(layout: &oci::Layout) -> BTreeSet<Digest> {
    layout.blobs.iter().map(|b| b.digest.clone()).collect()
}

/// The built image's layer that is largest (busybox's base layer).
fn largest_layer(m: &oci::ImageManifest) -> &Digest {
    &m.manifest
        .layers
        .iter()
        .max_by_key(|l| l.size)
        .expect("layers")
        .digest
}

fn extract(tar: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn oci_tar_from_buildkitd_holds_the_built_manifest_and_every_blob_verifies() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let tar = ctx.path().join("image.tar");
    let meta = build(&env, &ctx, &format!("type=oci,dest={}", tar.display()), &[]);
    let digest = meta_digest(&meta, "containerimage.digest");

    let layout = oci::read_path(&tar).await.unwrap();
    let m = layout
        .manifest_by_digest(&digest)
        .unwrap_or_else(|| panic!("no manifest {digest} in {layout:#?}"));
    assert_eq!(
        m.manifest.config.digest,
        meta_digest(&meta, "containerimage.config.digest")
    );
    let platform: Platform =
        serde_json::from_value(meta["containerimage.descriptor"]["platform"].clone()).unwrap();
    assert_eq!(m.platform.as_ref(), Some(&platform));
    assert_eq!(
        layout.manifest_by_platform(&platform).unwrap().digest(),
        &digest
    );
    let config = m.config.as_ref().expect("an image config");
    assert_eq!(
        (&*config.os, &*config.architecture),
        (&*platform.os, &*platform.architecture)
    );
    assert!(
        config.config.env.iter().any(|e| e.starts_with("PATH=")),
        "{config:?}"
    );
    assert_eq!(m.manifest.layers.len(), 2);
    assert_eq!(config.rootfs.diff_ids.len(), 2);
    // The layers are gzip: their diff ids were checked by decompressing them.
    assert!(m.diff_ids_verified);
    assert_ne!(m.manifest.layers[1].digest, config.rootfs.diff_ids[1]);

    // Every blob in the archive was verified, and every reference is among them.
    let bytes = std::fs::read(&tar).unwrap();
    assert_eq!(blob_set(&layout), blob_names(&bytes));
    assert!(referenced(&layout).is_subset(&blob_set(&layout)));

    // A stream reads the same as the path.
    let file = tokio::fs::File::open(&tar).await.unwrap();
    assert_eq!(oci::read_tar(file).await.unwrap(), layout);
}

#[tokio::test]
async fn oci_tar_streamed_from_buildctl_stdout_is_read_as_it_arrives() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let meta = ctx.path().join("metadata.json");
    let mut args = buildctl_args(&env, ctx.path(), "type=oci,dest=-", &[]);
    args.extend(["--metadata-file".to_string(), meta.display().to_string()]);
    let log = std::fs::File::create(ctx.path().join("buildctl.log")).unwrap();
    let mut child = tokio::process::Command::new(env.bin_dir.join("buildctl"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let layout = oci::read_tar(child.stdout.take().unwrap()).await;
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(ctx.path().join("buildctl.log")).unwrap()
    );
    let layout = layout.unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    let digest = meta_digest(&meta, "containerimage.digest");
    assert!(layout.manifest_by_digest(&digest).is_some(), "{layout:#?}");
    assert!(referenced(&layout).is_subset(&blob_set(&layout)));
}

#[tokio::test]
async fn multi_platform_oci_tar_has_one_manifest_per_platform() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let tar = ctx.path().join("multi.tar");
    let meta = build(
        &env,
        &ctx,
        &format!("type=oci,dest={}", tar.display()),
        &["--opt", "platform=linux/amd64,linux/386"],
    );
    let index_digest = meta_digest(&meta, "containerimage.digest");

    let layout = oci::read_path(&tar).await.unwrap();
    // BuildKit nests the image's index under index.json.
    let nested = layout
        .index_by_digest(&index_digest)
        .expect("the built index");
    assert_eq!(nested.parent, None);
    let images: Vec<_> = layout
        .manifests
        .iter()
        .filter(|m| !m.is_attestation())
        .collect();
    assert_eq!(images.len(), 2, "{layout:#?}");
    let platforms: BTreeSet<String> = images
        .iter()
        .map(|m| m.platform.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/386".to_string(), "linux/amd64".to_string()])
    );
    for arch in ["amd64", "386"] {
        let m = layout
            .manifest_by_platform(&Platform::new("linux", arch))
            .unwrap();
        assert_eq!(m.parent.as_ref(), Some(&index_digest));
        assert_eq!(m.config.as_ref().unwrap().architecture, arch);
        assert!(m.diff_ids_verified);
    }
    assert_ne!(
        layout
            .manifest_by_platform(&Platform::new("linux", "amd64"))
            .unwrap()
            .digest(),
        layout
            .manifest_by_platform(&Platform::new("linux", "386"))
            .unwrap()
            .digest()
    );
    assert_eq!(blob_set(&layout), blob_names(&std::fs::read(&tar).unwrap()));
}

#[tokio::test]
async fn oci_layout_directory_reads_like_the_same_layout_as_a_tar() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let dir = ctx.path().join("layout");
    let meta = build(
        &env,
        &ctx,
        &format!("type=oci,dest={},tar=false", dir.display()),
        &[],
    );
    let digest = meta_digest(&meta, "containerimage.digest");

    let layout = oci::read_path(&dir).await.unwrap();
    assert!(layout.manifest_by_digest(&digest).is_some(), "{layout:#?}");
    assert!(referenced(&layout).is_subset(&blob_set(&layout)));

    let tar = ctx.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(oci::read_path(&tar).await.unwrap(), layout);
}

#[tokio::test]
async fn docker_save_tar_verifies_config_and_layers_and_has_repo_tags() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("busybox.tar");
    let out = Command::new("docker")
        .env("DOCKER_HOST", &env.docker_host)
        .args(["save", "busybox:local", "-o"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("docker")
        .env("DOCKER_HOST", &env.docker_host)
        .args(["image", "inspect", "--format", "{{.Id}}", "busybox:local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Digest = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let layout = oci::read_path(&tar).await.unwrap();
    let image = layout
        .docker_image_by_config(&id)
        .expect("the image by its id");
    assert_eq!(image.repo_tags, ["busybox:local"]);
    assert!(layout.names().contains(&"busybox:local"));
    assert_eq!(image.config.os, "linux");
    assert!(!image.layers.is_empty());
    assert_eq!(image.layers.len(), image.config.rootfs.diff_ids.len());
    // `docker save` stores layers uncompressed: each file's sha256 is its diff id.
    for layer in &image.layers {
        assert_eq!(layer.digest, layer.diff_id, "{}", layer.path);
    }
    assert!(image.diff_ids_verified);
}

#[tokio::test]
async fn buildctl_docker_tar_verifies_and_carries_its_name() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let tar = ctx.path().join("docker.tar");
    let name = "example.com/oci-reader:test";
    let meta = build(
        &env,
        &ctx,
        &format!("type=docker,dest={},name={name}", tar.display()),
        &[],
    );
    let config = meta_digest(&meta, "containerimage.config.digest");

    let layout = oci::read_path(&tar).await.unwrap();
    let image = layout
        .docker_image_by_config(&config)
        .expect("manifest.json image");
    assert_eq!(image.repo_tags, [name]);
    assert_eq!(image.layers.len(), 2);
    assert!(image.diff_ids_verified);
    // BuildKit's docker tar also holds an OCI index naming the same manifest.
    let m = layout
        .manifest_by_digest(&meta_digest(&meta, "containerimage.digest"))
        .expect("index.json manifest");
    assert_eq!(m.manifest.config.digest, config);
    assert!(m.names.iter().any(|n| n == name), "{:?}", m.names);
    assert_eq!(blob_set(&layout), blob_names(&std::fs::read(&tar).unwrap()));
}

/// An OCI tar, its manifest, and the digest of its largest layer.
async fn built_oci_tar(env: &TestEnv, ctx: &TempDir) -> (PathBuf, oci::Layout, Digest) {
    let tar = ctx.path().join("image.tar");
    let meta = build(env, ctx, &format!("type=oci,dest={}", tar.display()), &[]);
    let layout = oci::read_path(&tar).await.unwrap();
    let m = layout
        .manifest_by_digest(&meta_digest(&meta, "containerimage.digest"))
        .unwrap();
    let layer = largest_layer(m).clone();
    (tar, layout, layer)
}

#[tokio::test]
async fn flipped_byte_in_a_layer_is_reported_as_a_digest_mismatch_naming_the_blob() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let (tar, _, layer) = built_oci_tar(&env, &ctx).await;
    let entry = layer.blob_path();

    // In a copy of the tar.
    let mut bytes = std::fs::read(&tar).unwrap();
    let (_, offset, size) = tar_entries(&bytes)
        .into_iter()
        .find(|(name, _, _)| name.trim_start_matches("./") == entry)
        .unwrap();
    bytes[offset + size / 2] ^= 0x01;
    let corrupt = ctx.path().join("corrupt.tar");
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = oci::read_path(&corrupt).await.unwrap_err();
    match err.kind() {
        ErrorKind::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &layer);
            assert_ne!(actual, &layer);
        }
        other => panic!("{other:?}: {err}"),
    }
    assert_eq!(err.entry(), Some(entry.as_str()));
    assert_eq!(err.archive(), Some(corrupt.as_path()));
    let msg = err.to_string();
    assert!(
        msg.contains(layer.as_str()) && msg.contains("corrupt.tar"),
        "{msg}"
    );

    // In a layout directory.
    let dir = ctx.path().join("layout");
    extract(&tar, &dir);
    let blob = dir.join(&entry);
    let mut content = std::fs::read(&blob).unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0x80;
    std::fs::remove_file(&blob).unwrap(); // it is read-only
    std::fs::write(&blob, &content).unwrap();
    let err = oci::read_path(&dir).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DigestMismatch { expected, .. } if expected == &layer),
        "{err}"
    );
    assert_eq!(err.entry(), Some(entry.as_str()));
}

#[tokio::test]
async fn removed_blob_is_reported_missing_with_who_references_it() {
    let env = TestEnv::get();
    let ctx = context(&env);
    let (tar, layout, layer) = built_oci_tar(&env, &ctx).await;
    let manifest = layout
        .manifests
        .iter()
        .find(|m| m.manifest.layers.iter().any(|l| l.digest == layer))
        .unwrap()
        .digest()
        .clone();
    let entry = layer.blob_path();
    let expected = ErrorKind::MissingBlob {
        digest: layer.clone(),
        referenced_by: format!("manifest {manifest}"),
    };

    // From a copy of the tar, with the entry cut out.
    let bytes = std::fs::read(&tar).unwrap();
    let (_, offset, size) = tar_entries(&bytes)
        .into_iter()
        .find(|(name, _, _)| name.trim_start_matches("./") == entry)
        .unwrap();
    let cut = [
        &bytes[..offset - 512],
        &bytes[offset + size.next_multiple_of(512)..],
    ]
    .concat();
    let err = oci::read_tar(&cut[..]).await.unwrap_err();
    assert_eq!(err.kind(), &expected, "{err}");
    assert_eq!(err.entry(), Some(entry.as_str()));

    // From a layout directory.
    let dir = ctx.path().join("layout");
    extract(&tar, &dir);
    std::fs::remove_file(dir.join(&entry)).unwrap();
    let err = oci::read_path(&dir).await.unwrap_err();
    assert!(err.is_missing(), "{err}");
    assert_eq!(err.kind(), &expected);
    assert!(err.to_string().contains("is missing"), "{err}");
}
