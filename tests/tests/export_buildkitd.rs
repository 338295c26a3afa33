//! Exporters against the standalone buildkitd (remote driver): OCI and Docker tars
//! read back and verified, `docker load`, registry pushes (anonymous and with the
//! session's credentials), the filesystem as a directory and as a tar, and several
//! exporters in one solve.

use std::os::unix::fs::PermissionsExt;

use buildkit_driver::{Build, Driver, Network, Remote, Solved};
use buildkit_export::{DockerLoad, DockerTar, Image, LocalDir, OciTar, Tar, oci};
use buildkit_session::{Auth, Credentials};
use docker_api::RegistryAuth;
use docker_api::images::PullOptions;
use futures_util::StreamExt;
use tests::{
    AuthRegistry, Cleanup, Leftover, TestEnv, context_dir, run_image, solve_with_events,
    unique_name,
};

fn remote(env: &TestEnv) -> Remote {
    Remote::new(&env.buildkit_host).unwrap()
}

/// A small image whose `/hello` holds `token`, run as its default command.
fn image_context(env: &TestEnv, token: &str) -> tempfile::TempDir {
    context_dir(&[(
        "Dockerfile",
        &format!(
            "FROM {}/busybox:local\nRUN echo {token} > /hello\nCMD [\"cat\", \"/hello\"]\n",
            env.registry
        ),
    )])
}

async fn solve(driver: &dyn Driver, build: Build) -> Solved {
    let (res, _) = solve_with_events(driver, build.network(Network::Host)).await;
    res.unwrap()
}

fn digest(solved: &Solved) -> oci::Digest {
    solved
        .digest()
        .expect("the exporter reported containerimage.digest")
        .parse()
        .unwrap()
}

/// The manifest `digest` names in `layout`: found, with its layers verified against
/// the config's diff ids (every blob's digest is verified by the reader).
fn assert_manifest(layout: &oci::Layout, digest: &oci::Digest) {
    let m = layout
        .manifest_by_digest(digest)
        .unwrap_or_else(|| panic!("no manifest {digest:?} in {:?}", layout.manifests));
    assert!(m.diff_ids_verified, "{m:?}");
    assert!(!m.manifest.layers.is_empty());
    let blobs: Vec<&oci::Digest> = layout.blobs.iter().map(|b| &b.digest).collect();
    for l in &m.manifest.layers {
        assert!(blobs.contains(&&l.digest), "layer {:?} missing", l.digest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_tar_to_a_file_and_to_a_writer() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let token = unique_name("oci");
    let ctx = image_context(&env, &token);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("image.oci.tar");

    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(OciTar::to_file(&path).name("example.com/oci:1")),
    )
    .await;
    let layout = oci::read_path(&path).await.unwrap();
    assert_manifest(&layout, &digest(&solved));
    assert!(
        layout.names().contains(&"example.com/oci:1"),
        "{:?}",
        layout.names()
    );
    assert_eq!(solved.outputs.len(), 1);
    assert_eq!(
        solved.outputs[0].bytes,
        std::fs::metadata(&path).unwrap().len()
    );

    // Into any writer: read and verified as it streams, never written to disk.
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let reading = tokio::spawn(oci::read_tar(reader));
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(OciTar::to_writer(writer)),
    )
    .await;
    let layout = reading.await.unwrap().unwrap();
    assert_manifest(&layout, &digest(&solved));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_tar_is_loadable_and_loads_into_dockerd() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let docker = env.docker();
    let token = unique_name("dockertar");
    let ctx = image_context(&env, &token);

    // A file: a Docker archive whose image is the config the exporter reported.
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("image.docker.tar");
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(DockerTar::to_file(&path).name("dockertar:1")),
    )
    .await;
    let layout = oci::read_path(&path).await.unwrap();
    let config: oci::Digest = solved.exporter_response["containerimage.config.digest"]
        .parse()
        .unwrap();
    let image = layout
        .docker_image_by_config(&config)
        .expect("the exported image");
    assert!(image.diff_ids_verified);
    assert_eq!(image.repo_tags, vec!["dockertar:1".to_string()]);

    // Straight into dockerd, then run.
    let tag = format!("{token}:loaded");
    let _cleanup = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(DockerLoad::new(docker.clone()).name(&tag)),
    )
    .await;
    let loaded = &solved.outputs[0].detail["loaded"];
    assert!(loaded.contains(&tag), "{loaded}");
    let inspect = docker.images().inspect(&tag).await.unwrap();
    assert_eq!(
        inspect.id,
        solved.exporter_response["containerimage.config.digest"]
    );
    let (code, out) = run_image(&docker, &tag, &[]).await;
    assert_eq!((code, out.trim()), (0, token.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn push_to_the_registry_then_pull_by_digest_and_run() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let docker = env.docker();
    let token = unique_name("push");
    let ctx = image_context(&env, &token);
    let name = format!("{}/{token}", env.registry);

    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(Image::new().name(format!("{name}:1")).push()),
    )
    .await;
    let by_digest = format!("{name}@{}", digest(&solved).as_str());
    let _cleanup = Cleanup::new(&env, Leftover::Image(by_digest.clone()));
    docker
        .images()
        .pull(&PullOptions::new(&by_digest))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let (code, out) = run_image(&docker, &by_digest, &[]).await;
    assert_eq!((code, out.trim()), (0, token.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn push_to_a_registry_that_needs_the_sessions_credentials() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let docker = env.docker();
    let registry = AuthRegistry::start("pusher", "s3cret-pass");
    let token = unique_name("authpush");
    let ctx = image_context(&env, &token);
    let name = format!("{}/{token}", registry.host);
    let push = |tag: &str| Image::new().name(format!("{name}:{tag}")).push();

    // Without credentials, and with a wrong password: refused by the registry.
    for (auth, what) in [
        (Auth::none(), "no credentials"),
        (
            Auth::none().credentials(&registry.host, Credentials::basic("pusher", "wrong")),
            "a wrong password",
        ),
    ] {
        let build = Build::dockerfile(ctx.path())
            .network(Network::Host)
            .auth(auth)
            .output(push("refused"));
        let (res, _) = solve_with_events(&driver, build).await;
        let err = res.expect_err(what);
        let msg = err.to_string();
        assert!(err.solve_error().is_some(), "{what}: {msg}");
        assert!(msg.contains("failed to push"), "{what}: {msg}");
        assert!(msg.contains("401 Unauthorized"), "{what}: {msg}");
    }

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .auth(Auth::none().credentials(
            &registry.host,
            Credentials::basic(&registry.user, &registry.password),
        ))
        .output(push("1"));
    let (res, _) = solve_with_events(&driver, build).await;
    let solved = res.unwrap();

    // It is there: dockerd pulls it by digest with the same credentials, and runs it.
    let by_digest = format!("{name}@{}", digest(&solved).as_str());
    let _cleanup = Cleanup::new(&env, Leftover::Image(by_digest.clone()));
    let auth = RegistryAuth::password(&registry.user, &registry.password).server(&registry.host);
    docker
        .images()
        .pull(&PullOptions::new(&by_digest).auth(auth))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let (code, out) = run_image(&docker, &by_digest, &[]).await;
    assert_eq!((code, out.trim()), (0, token.as_str()));
}

/// A stage whose files have particular modes and a symlink, exported alone.
fn files_context(env: &TestEnv) -> tempfile::TempDir {
    context_dir(&[(
        "Dockerfile",
        &format!(
            "FROM {}/busybox:local AS build\n\
             RUN mkdir -p /out/sub && echo x > /out/f && chmod 0750 /out/f && ln -s f /out/link \
             && echo nested > /out/sub/g && chmod 0604 /out/sub/g && chmod 0711 /out/sub\n\
             FROM scratch\nCOPY --from=build /out /\n",
            env.registry
        ),
    )])
}

fn assert_files(dir: &std::path::Path) {
    let mode = |p: &str| {
        std::fs::symlink_metadata(dir.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "x\n");
    assert_eq!(mode("f"), 0o750);
    assert!(
        std::fs::symlink_metadata(dir.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(dir.join("link")).unwrap(),
        std::path::Path::new("f")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/g")).unwrap(),
        "nested\n"
    );
    assert_eq!(mode("sub/g"), 0o604);
    assert_eq!(mode("sub"), 0o711);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_dir_keeps_modes_and_symlinks() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let ctx = files_context(&env);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("dest");
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(LocalDir::new(&dest)),
    )
    .await;
    assert_files(&dest);
    assert_eq!(
        solved.outputs[0].bytes,
        "x\n".len() as u64 + "nested\n".len() as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tar_holds_the_files_with_modes_and_links() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let ctx = files_context(&env);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fs.tar");
    solve(
        &driver,
        Build::dockerfile(ctx.path()).output(Tar::to_file(&path)),
    )
    .await;

    let file = tokio::fs::File::open(&path).await.unwrap();
    let mut entries = async_tar::Archive::new(file).entries().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(entry) = entries.next().await {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header().clone();
        let mut data = String::new();
        if header.entry_type().is_file() {
            use tokio::io::AsyncReadExt;
            entry.read_to_string(&mut data).await.unwrap();
        }
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        seen.insert(
            path.trim_end_matches('/').to_string(),
            (
                header.entry_type(),
                header.mode().unwrap() & 0o7777,
                data,
                link,
            ),
        );
    }
    let f = &seen["f"];
    assert!(f.0.is_file() && f.1 == 0o750 && f.2 == "x\n", "{f:?}");
    let link = &seen["link"];
    assert!(link.0.is_symlink(), "{link:?}");
    assert_eq!(link.3.as_deref(), Some("f"));
    let g = &seen["sub/g"];
    assert!(g.0.is_file() && g.1 == 0o604 && g.2 == "nested\n", "{g:?}");
    assert!(seen["sub"].0.is_dir() && seen["sub"].1 == 0o711);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_exporters_in_one_solve() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let token = unique_name("multi");
    let ctx = image_context(&env, &token);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("image.oci.tar");
    let dir = out.path().join("rootfs");
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path())
            .output(OciTar::to_file(&tar))
            .output(LocalDir::new(&dir)),
    )
    .await;
    assert_eq!(solved.outputs.len(), 2);
    let layout = oci::read_path(&tar).await.unwrap();
    assert_manifest(&layout, &digest(&solved));
    assert_eq!(
        std::fs::read_to_string(dir.join("hello")).unwrap(),
        format!("{token}\n")
    );
    assert!(dir.join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_layout_directory() {
    let env = TestEnv::get();
    let driver = remote(&env);
    let token = unique_name("ocidir");
    let ctx = image_context(&env, &token);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    let solved = solve(
        &driver,
        Build::dockerfile(ctx.path()).output(OciTar::to_dir(&dir).name("example.com/ocidir:2")),
    )
    .await;
    let layout = oci::read_path(&dir).await.unwrap();
    assert_manifest(&layout, &digest(&solved));
    assert!(
        layout.names().contains(&"example.com/ocidir:2"),
        "{:?}",
        layout.names()
    );
}
