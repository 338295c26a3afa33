//! Exporters and caches on dockerd's embedded BuildKit (Engine 20.10, graphdriver
//! store): what it cannot do is refused before anything is solved, with a message that
//! says what to use instead; inline cache lands in the image config.

use buildkit_driver::{Build, Moby, Network};
use buildkit_export::{Image, InlineCache, LocalCache, LocalDir, Moby as MobyOutput, OciTar};
use futures_util::StreamExt;
use tests::{Cleanup, Leftover, TestEnv, context_dir, solve_with_events, unique_name};

/// dockerd 20.10's BuildKit is fragile under parallel builds: one at a time here.
static DOCKERD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Dockerfile that fails if it is ever solved: a refusal must come before.
fn never_solved() -> tempfile::TempDir {
    context_dir(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN echo solved-after-all && exit 7\n",
    )])
}

async fn refused(build: Build) -> buildkit_driver::Error {
    let env = TestEnv::get();
    let driver = Moby::new(env.docker());
    let (res, events) = solve_with_events(&driver, build.network(Network::Host)).await;
    let err = res.expect_err("dockerd's store cannot do this");
    assert!(err.is_unsupported(), "refused before solving: {err}");
    assert!(events.is_empty(), "nothing ran: {events:?}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_tar_is_refused_before_solving_with_a_suggestion() {
    let ctx = never_solved();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("image.oci.tar");
    let err = refused(Build::dockerfile(ctx.path()).output(OciTar::to_file(&path))).await;
    let msg = err.to_string();
    assert!(msg.contains("driver moby"), "{msg}");
    assert!(msg.contains("\"oci\" exporter"), "{msg}");
    assert!(
        msg.contains("use the docker-container or remote driver"),
        "{msg}"
    );
    assert!(!path.exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_exporter_is_refused_before_solving() {
    let ctx = never_solved();
    let err = refused(
        Build::dockerfile(ctx.path()).output(
            Image::new()
                .name(format!("{}/never:1", TestEnv::get().registry))
                .push(),
        ),
    )
    .await;
    let msg = err.to_string();
    assert!(msg.contains("\"image\" exporter"), "{msg}");
    assert!(
        msg.contains("exports only to its image store (`moby`)"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_exporters_are_refused_before_solving() {
    let ctx = never_solved();
    let out = tempfile::tempdir().unwrap();
    let err = refused(
        Build::dockerfile(ctx.path())
            .output(MobyOutput::named(unique_name("two-exporters")))
            .output(LocalDir::new(out.path().join("dir"))),
    )
    .await;
    let msg = err.to_string();
    assert!(msg.contains("2 exporters in one build"), "{msg}");
    assert!(msg.contains("one exporter per build"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_cache_is_refused_before_solving() {
    let ctx = never_solved();
    let out = tempfile::tempdir().unwrap();
    let cache = LocalCache::new(out.path().join("cache"));
    let err = refused(Build::dockerfile(ctx.path()).cache_to(cache.clone())).await;
    assert!(
        err.to_string().contains("cache export to \"local\""),
        "{err}"
    );
    assert!(!cache.dir().exists(), "nothing was created");
}

/// The image config as stored in dockerd (from `docker save`), as JSON.
async fn saved_config(docker: &docker_api::Docker, image: &str) -> serde_json::Value {
    let id = docker.images().inspect(image).await.unwrap().id;
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    let stream = docker
        .images()
        .save(&[image])
        .await
        .unwrap()
        .map(|r| r.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    let mut entries = async_tar::Archive::new(reader).entries().unwrap();
    let mut found = None;
    while let Some(entry) = entries.next().await {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        // `<id>.json` (Engine 20.10) or `blobs/sha256/<id>` (Engine 25+).
        if path == format!("{hex}.json") || path == format!("blobs/sha256/{hex}") {
            let mut data = Vec::new();
            use tokio::io::AsyncReadExt;
            entry.read_to_end(&mut data).await.unwrap();
            found = Some(serde_json::from_slice(&data).unwrap());
        }
    }
    found.unwrap_or_else(|| panic!("no config {id} in the saved image"))
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_cache_lands_in_the_image_config() {
    let _one = DOCKERD.lock().await;
    let env = TestEnv::get();
    let docker = env.docker();
    let driver = Moby::new(docker.clone());
    let token = unique_name("inline");
    let ctx = context_dir(&[(
        "Dockerfile",
        &format!("FROM busybox:local\nRUN echo {token} > /token\n"),
    )]);
    let tag = format!("{token}:1");
    let _cleanup = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .output(MobyOutput::named(&tag))
        .cache_to(InlineCache::new());
    let (res, _) = solve_with_events(&driver, build).await;
    res.unwrap();

    let config = saved_config(&docker, &tag).await;
    let inline = config["moby.buildkit.cache.v0"]
        .as_str()
        .unwrap_or_else(|| panic!("no inline cache in the config: {config}"));
    use base64::Engine;
    let cache: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(inline)
            .unwrap(),
    )
    .unwrap();
    // Engine 20.10 writes the legacy inline format: a list of cache records (the
    // base image and the RUN step), whose layers point into the image's layers by
    // index. The RUN step made the last layer.
    let records = cache.as_array().unwrap_or_else(|| panic!("{cache}"));
    assert!(records.len() >= 2, "{cache}");
    assert!(records.iter().all(|r| r["digest"].is_string()), "{cache}");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers: Vec<u64> = records
        .iter()
        .filter_map(|r| r["layers"].as_array())
        .flatten()
        .filter_map(|l| l["layer"].as_u64())
        .collect();
    assert!(
        layers.contains(&(diff_ids.len() as u64 - 1)),
        "{cache} {diff_ids:?}"
    );
    assert!(layers.iter().all(|&l| l < diff_ids.len() as u64), "{cache}");

    // And a control: without InlineCache the config has none.
    let plain = format!("{token}:plain");
    let _cleanup2 = Cleanup::new(&env, Leftover::Image(plain.clone()));
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .output(MobyOutput::named(&plain));
    let (res, _) = solve_with_events(&driver, build).await;
    res.unwrap();
    let config = saved_config(&docker, &plain).await;
    assert!(config.get("moby.buildkit.cache.v0").is_none(), "{config}");
}
