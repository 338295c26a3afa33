//! Images against the real dockerd and registry: classic and BuildKit builds, run,
//! push and pull back by digest, save and load, errors.

use std::time::Duration;

use bytes::Bytes;
use docker_api::containers::{LogsOptions, WaitCondition};
use docker_api::images::{
    BuildAux, BuildCachePruneOptions, BuildOptions, BuilderVersion, ListImagesOptions, PushAux,
    RemoveImageOptions,
};
use docker_api::{Body, ContainerConfig, Docker, Filters, PullOptions, RegistryAuth, StreamKind};
use futures_util::{StreamExt, TryStreamExt};
use tests::{Cleanup, Leftover, TestEnv, tar_archive, unique_name};
use tokio::io::AsyncWriteExt;

/// A context tar streamed in small chunks, as a large one would be.
fn streamed(tar: Vec<u8>) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = tar
        .chunks(700)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::stream(futures_util::stream::iter(chunks))
}

/// Builds a tiny image unique to this run with the classic builder; returns its id.
async fn build_unique(docker: &Docker, tag: &str) -> String {
    let marker = unique_name("marker");
    let dockerfile =
        format!("FROM busybox:local\nRUN echo {marker} > /marker\nCMD [\"cat\", \"/marker\"]\n");
    let ctx = tar_archive(&[("Dockerfile", dockerfile.as_bytes())]);
    let aux = docker
        .images()
        .build(
            &BuildOptions::new()
                .tag(tag)
                .network_mode("none")
                .version(BuilderVersion::Classic),
            streamed(ctx),
        )
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    aux.iter()
        .rev()
        .find_map(|m| m.aux_as::<BuildAux>())
        .expect("a classic build reports the image id")
        .id
}

/// Runs an image to completion and returns (exit code, stdout, stderr).
async fn run(env: &TestEnv, docker: &Docker, image: &str) -> (i64, String, String) {
    let config = ContainerConfig::new(image).network_mode("none");
    let id = docker.containers().create(&config).await.unwrap().id;
    let _guard = Cleanup::new(env, Leftover::Container(id.clone()));
    docker.containers().start(&id).await.unwrap();
    let exit = docker
        .containers()
        .wait(&id, WaitCondition::NotRunning)
        .await
        .unwrap();
    let logs: Vec<_> = docker
        .containers()
        .logs(&id, &LogsOptions::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let of = |k| {
        logs.iter()
            .filter(|o| o.kind == k)
            .map(|o| String::from_utf8_lossy(&o.data).into_owned())
            .collect::<String>()
    };
    (
        exit.status_code,
        of(StreamKind::Stdout),
        of(StreamKind::Stderr),
    )
}

#[tokio::test]
async fn classic_build_with_options_then_run() {
    let env = TestEnv::get();
    let docker = env.docker();
    let tag = format!("{}:v1", unique_name("docker-api-classic"));
    let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let dockerfile = "FROM busybox:local AS base\n\
                      ARG GREETING=unset\n\
                      COPY hello.txt /hello.txt\n\
                      RUN echo \"$GREETING\" > /greeting\n\
                      FROM base AS final\n\
                      CMD [\"sh\", \"-c\", \"cat /hello.txt /greeting; echo warn >&2; exit 4\"]\n\
                      FROM base AS other\n\
                      RUN exit 1\n";
    let ctx = tar_archive(&[
        ("build/app.Dockerfile", dockerfile.as_bytes()),
        ("hello.txt", b"hello from the context\n"),
    ]);
    let stream = docker
        .images()
        .build(
            &BuildOptions::new()
                .dockerfile("build/app.Dockerfile")
                .tag(&tag)
                .build_arg("GREETING", "hi there")
                .label("org.example.test", "classic")
                .target("final")
                .network_mode("none")
                .no_cache(true)
                .version(BuilderVersion::Classic),
            streamed(ctx),
        )
        .await
        .unwrap();
    let messages: Vec<_> = stream.try_collect().await.unwrap();
    let text: String = messages.iter().filter_map(|m| m.stream.clone()).collect();
    assert!(text.contains("Step 1/"), "{text}");
    // Each stage reports its image; the final one is the result.
    let id = messages
        .iter()
        .rev()
        .find_map(|m| m.aux_as::<BuildAux>())
        .expect("the image id comes as aux")
        .id;

    let inspect = docker.images().inspect(&tag).await.unwrap();
    assert_eq!(inspect.id, id);
    assert!(inspect.repo_tags.contains(&tag), "{:?}", inspect.repo_tags);
    let config = inspect.config.unwrap();
    assert_eq!(
        config.labels.get("org.example.test").map(String::as_str),
        Some("classic")
    );

    let (code, out, err) = run(&env, &docker, &tag).await;
    assert_eq!(out, "hello from the context\nhi there\n");
    assert_eq!(err, "warn\n");
    assert_eq!(code, 4);

    let listed = docker
        .images()
        .list(&ListImagesOptions::new().filters(Filters::new().add("reference", &tag)))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
}

/// BuildKit builds in this binary run one at a time: gentler on the shared daemon.
static BUILDKIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn buildkit_build_keeps_trace_aux_and_reports_the_image() {
    let _one_at_a_time = BUILDKIT.lock().await;
    let env = TestEnv::get();
    let docker = env.docker();
    let tag = format!("{}:v1", unique_name("docker-api-buildkit"));
    let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let ctx = tar_archive(&[(
        "Dockerfile",
        b"FROM busybox:local\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n",
    )]);
    let messages: Vec<_> = docker
        .images()
        .build(
            &BuildOptions::new()
                .tag(&tag)
                .network_mode("none")
                .version(BuilderVersion::BuildKit),
            streamed(ctx),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let traces: Vec<_> = messages
        .iter()
        .filter(|m| m.id.as_deref() == Some("moby.buildkit.trace"))
        .collect();
    assert!(!traces.is_empty(), "{messages:?}");
    // The trace is passed on untouched: a base64 string for the upper crates.
    for t in &traces {
        let s = t
            .aux
            .as_ref()
            .and_then(|a| a.as_str())
            .expect("aux is a string");
        assert!(
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
    }
    let id = messages
        .iter()
        .filter(|m| m.id.as_deref() == Some("moby.image.id"))
        .find_map(|m| m.aux_as::<BuildAux>())
        .expect("BuildKit reports the image id as moby.image.id aux")
        .id;
    assert_eq!(docker.images().inspect(&tag).await.unwrap().id, id);
    let (code, out, _) = run(&env, &docker, &tag).await;
    assert_eq!((code, out.as_str()), (0, "built\n"));

    // The build cache can be pruned afterwards.
    let pruned = docker
        .images()
        .prune_build_cache(&BuildCachePruneOptions::new().all(true))
        .await
        .unwrap();
    assert_eq!(
        pruned.caches_deleted.is_empty(),
        pruned.space_reclaimed == 0
    );
}

#[tokio::test]
async fn build_failures_surface_the_daemons_message() {
    let _one_at_a_time = BUILDKIT.lock().await;
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = tar_archive(&[("Dockerfile", b"FROM busybox:local\nRUN exit 3\n")]);
    for (version, expected) in [
        (BuilderVersion::Classic, "returned a non-zero code: 3"),
        (BuilderVersion::BuildKit, "exit code: 3"),
    ] {
        let tag = format!("{}:v1", unique_name("docker-api-fail"));
        let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));
        let opts = BuildOptions::new()
            .tag(&tag)
            .network_mode("none")
            .force_rm(true)
            .version(version);
        let mut stream = docker
            .images()
            .build(&opts, streamed(ctx.clone()))
            .await
            .unwrap();
        let mut error = None;
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                error = Some(e);
            }
        }
        let err = error.unwrap_or_else(|| panic!("{version:?}: the failed build yielded no error"));
        assert!(
            err.message().is_some_and(|m| m.contains(expected)),
            "{version:?}: {err}"
        );
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test]
async fn tag_push_remove_and_pull_back_by_digest() {
    let env = TestEnv::get();
    let docker = env.docker();
    let local = format!("{}:v1", unique_name("docker-api-push"));
    let _local = Cleanup::new(&env, Leftover::Image(local.clone()));
    let id = build_unique(&docker, &local).await;

    let repo = format!("{}/{}", env.registry, unique_name("docker-api-push"));
    let remote = format!("{repo}:v1");
    let _remote = Cleanup::new(&env, Leftover::Image(remote.clone()));
    docker.images().tag(&local, &remote).await.unwrap();
    assert_eq!(docker.images().inspect(&remote).await.unwrap().id, id);

    let aux = docker
        .images()
        .push(&remote, &RegistryAuth::anonymous())
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let pushed = aux
        .iter()
        .find_map(|m| m.aux_as::<PushAux>())
        .expect("push reports the digest as aux");
    assert_eq!(pushed.tag, "v1");
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    let by_digest = format!("{repo}@{}", pushed.digest);
    let inspect = docker.images().inspect(&remote).await.unwrap();
    assert!(
        inspect.repo_digests.contains(&by_digest),
        "{:?}",
        inspect.repo_digests
    );

    // Remove every reference so the pull has to fetch the layers again.
    for r in [&remote, &local] {
        let deleted = docker
            .images()
            .remove(r, &RemoveImageOptions::new())
            .await
            .unwrap();
        assert!(!deleted.is_empty());
    }
    let err = docker.images().inspect(&id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let _pulled = Cleanup::new(&env, Leftover::Image(by_digest.clone()));
    let messages: Vec<_> = docker
        .images()
        .pull(&PullOptions::new(&by_digest))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let status: Vec<_> = messages
        .iter()
        .filter_map(|m| m.status.as_deref())
        .collect();
    assert!(
        status.iter().any(|s| s.contains("Downloaded newer image")),
        "{status:?}"
    );
    let pulled = docker.images().inspect(&by_digest).await.unwrap();
    assert_eq!(pulled.id, id);
    let (code, out, _) = run(&env, &docker, &by_digest).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("marker-"), "{out}");
}

#[tokio::test]
async fn save_and_load_stream_both_ways() {
    let env = TestEnv::get();
    let docker = env.docker();
    let tag = format!("{}:v1", unique_name("docker-api-save"));
    let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let id = build_unique(&docker, &tag).await;

    // Saved to a file chunk by chunk...
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.tar");
    let mut out = tokio::fs::File::create(&file).await.unwrap();
    let mut saved = docker.images().save(&[&tag]).await.unwrap();
    let mut chunks = 0;
    while let Some(chunk) = saved.next().await {
        out.write_all(&chunk.unwrap()).await.unwrap();
        chunks += 1;
    }
    out.flush().await.unwrap();
    drop(out);
    assert!(chunks > 1, "the tar arrived in one piece");
    assert!(std::fs::metadata(&file).unwrap().len() > 1024);

    docker
        .images()
        .remove(&tag, &RemoveImageOptions::new())
        .await
        .unwrap();
    assert!(
        docker
            .images()
            .inspect(&tag)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // ...and loaded back from a reader.
    let reader = tokio::fs::File::open(&file).await.unwrap();
    let messages: Vec<_> = docker
        .images()
        .load(Body::reader(reader))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: String = messages
        .iter()
        .filter_map(|m| m.stream.clone().or(m.status.clone()))
        .collect();
    assert!(text.contains(&format!("Loaded image: {tag}")), "{text}");
    assert_eq!(docker.images().inspect(&tag).await.unwrap().id, id);
}

#[tokio::test]
async fn daemon_errors_carry_status_and_message() {
    let env = TestEnv::get();
    let docker = env.docker();
    let missing = format!("{}:nope", unique_name("docker-api-missing"));
    let err = docker.images().inspect(&missing).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.status(), Some(404));
    assert!(
        err.message()
            .is_some_and(|m| m.contains(&format!("No such image: {missing}"))),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("404") && text.contains("No such image"),
        "{text}"
    );
    assert!(text.contains(&env.docker_host), "{text}");

    // A pull of a tag the local registry does not have: the error may come as the
    // HTTP status or inside the stream; either way it is an Err with the reason.
    let absent = format!("{}/{}:nope", env.registry, unique_name("docker-api-absent"));
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        docker
            .images()
            .pull(&PullOptions::new(&absent))
            .await?
            .finish()
            .await
    })
    .await
    .expect("the pull fails promptly");
    let err = result.unwrap_err();
    let msg = err.message().unwrap_or_default().to_string();
    assert!(
        msg.contains("not found") || msg.contains("manifest unknown"),
        "{err}"
    );
}

#[tokio::test]
async fn import_creates_an_image_from_a_streamed_rootfs() {
    let env = TestEnv::get();
    let docker = env.docker();
    let tag = format!("{}:v1", unique_name("docker-api-import"));
    let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));
    let rootfs = tar_archive(&[("etc/imported", b"yes\n"), ("README", b"a rootfs\n")]);
    let messages: Vec<_> = docker
        .images()
        .import(&tag, streamed(rootfs))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // The import answers with the new image id as its status.
    let id = messages
        .iter()
        .find_map(|m| m.status.clone())
        .expect("import reports the image id");
    let inspect = docker.images().inspect(&tag).await.unwrap();
    assert_eq!(inspect.id, id.trim());
    assert_eq!(inspect.root_fs.unwrap().layers.len(), 1);
    assert_eq!(inspect.size, Some(13));
}
