//! buildkit-session against the real dockerd, through the REST `/build` with
//! `version=2` and a session attached with the `/session` upgrade.

use std::path::Path;

use buildkit_driver::progress::{Event, VertexState, events_from_message};
use buildkit_session::context::{TarOptions, context_tar};
use buildkit_session::{FileSync, Secrets, Session, SshForward, shared_key_for};
use docker_api::Body;
use docker_api::BuildOptions;
use docker_api::images::BuilderVersion;
use tests::{
    Agent, TestEnv, remove_image, rest_build, rootfs_with, run_image, unique_name as unique,
};

/// The seed's two-stage Dockerfile, on the local base image, plus a copy of the context.
const TWO_STAGE: &str = "\
FROM busybox:local AS builder1
RUN touch bollard.txt
FROM busybox:local AS builder2
RUN --mount=type=bind,from=builder1,target=mnt cp mnt/bollard.txt buildkit-bollard.txt
COPY . /ctx
ENTRYPOINT [\"sh\", \"-c\", \"ls buildkit-bollard.txt && ls -a /ctx\"]
";

fn two_stage_context() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), TWO_STAGE).unwrap();
    std::fs::write(d.path().join(".dockerignore"), "ignored.txt\n").unwrap();
    std::fs::write(d.path().join("ignored.txt"), "must not be sent").unwrap();
    std::fs::write(d.path().join("included.txt"), "sent").unwrap();
    d
}

fn options(session: &str, tag: &str, remote: bool) -> BuildOptions {
    let mut o = BuildOptions::new()
        .version(BuilderVersion::BuildKit)
        .session(session)
        .tag(tag)
        .network_mode("host")
        .dockerfile("Dockerfile")
        .no_cache(true)
        .rm(true);
    if remote {
        o = o.remote("client-session");
    }
    o
}

fn assert_two_stage_output(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"buildkit-bollard.txt"), "{out}");
    assert!(lines.contains(&"included.txt"), "{out}");
    assert!(lines.contains(&"Dockerfile"), "{out}");
    assert!(
        !lines.contains(&"ignored.txt"),
        ".dockerignored file reached the image: {out}"
    );
}

#[tokio::test]
async fn two_stage_build_with_the_context_over_filesync() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = two_stage_context();
    let files = FileSync::new()
        .dir("context", ctx.path())
        .dir("dockerfile", ctx.path());
    let stats = files.stats();
    let session = Session::new().attach(files);
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let tag = unique("bk-rest-fs");
    let built = rest_build(&docker, &options(&id, &tag, true), Body::empty())
        .await
        .unwrap();
    handle.close().await.unwrap();
    assert!(
        built
            .image_id
            .as_deref()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{:?}",
        built.messages
    );
    assert!(stats.files() >= 2, "FileSync sent {} files", stats.files());
    // The REST stream's BuildKit trace decodes into the same events as Control.Status.
    let events: Vec<Event> = built
        .messages
        .iter()
        .filter_map(events_from_message)
        .flat_map(|r| r.unwrap())
        .collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Vertex(v)
            if v.name.contains("RUN --mount=type=bind,from=builder1")
                && matches!(v.state, VertexState::Completed { .. }))),
        "{events:?}"
    );

    let (code, out) = run_image(&docker, &tag, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_two_stage_output(&out);
    remove_image(&docker, &tag).await;
}

#[tokio::test]
async fn two_stage_build_with_the_context_as_a_streamed_tar() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = two_stage_context();
    let tar = context_tar(ctx.path(), &TarOptions::default()).unwrap();
    let session = Session::new();
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let tag = unique("bk-rest-tar");
    let built = rest_build(&docker, &options(&id, &tag, false), Body::reader(tar))
        .await
        .unwrap();
    handle.close().await.unwrap();
    assert!(built.image_id.is_some());
    let (code, out) = run_image(&docker, &tag, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_two_stage_output(&out);
    remove_image(&docker, &tag).await;
}

async fn build_dir(docker: &docker_api::Docker, dir: &Path, tag: &str) -> u64 {
    let files = FileSync::new().dir("context", dir).dir("dockerfile", dir);
    let stats = files.stats();
    let session = Session::new()
        .with_shared_key(shared_key_for(dir))
        .attach(files);
    let id = session.id().to_string();
    let handle = session.run_on_docker(docker).await.unwrap();
    rest_build(docker, &options(&id, tag, true), Body::empty())
        .await
        .unwrap();
    handle.close().await.unwrap();
    stats.bytes()
}

#[tokio::test]
async fn a_rebuild_resends_only_the_changed_file() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:local\nCOPY . /ctx\nRUN du -s /ctx\n",
    )
    .unwrap();
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
    for d in 0..10 {
        std::fs::create_dir_all(ctx.path().join(format!("d{d}"))).unwrap();
        for f in 0..20 {
            std::fs::write(ctx.path().join(format!("d{d}/f{f}.bin")), &chunk).unwrap();
        }
    }
    let total = 200 * chunk.len() as u64;
    let tag = unique("bk-rest-incr");
    let first = build_dir(&docker, ctx.path(), &tag).await;
    assert!(first >= total, "first build sent {first} bytes of {total}");

    let changed = b"a different, shorter content".to_vec();
    std::fs::write(ctx.path().join("d3/f7.bin"), &changed).unwrap();
    let second = build_dir(&docker, ctx.path(), &tag).await;
    assert_eq!(
        second,
        changed.len() as u64,
        "the rebuild resent more than the changed file"
    );
    remove_image(&docker, &tag).await;
}

#[tokio::test]
async fn secret_mount_gives_the_exact_bytes() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:local\nRUN --mount=type=secret,id=s cat /run/secrets/s > /out\n",
    )
    .unwrap();
    let secret = b"line one\n\tsecret \x01\x02 value\n".to_vec();
    let session = Session::new()
        .attach(
            FileSync::new()
                .dir("context", ctx.path())
                .dir("dockerfile", ctx.path()),
        )
        .attach(Secrets::new().bytes("s", secret.clone()));
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let tag = unique("bk-rest-secret");
    rest_build(&docker, &options(&id, &tag, true), Body::empty())
        .await
        .unwrap();
    handle.close().await.unwrap();
    let (code, out) = run_image(&docker, &tag, &["cat", "/out"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.as_bytes(), &secret[..]);
    // The secret is not in any layer: the mount point is empty in the image.
    let (_, ls) = run_image(
        &docker,
        &tag,
        &["sh", "-c", "ls /run/secrets 2>/dev/null | wc -l"],
    )
    .await;
    assert_eq!(ls.trim(), "0");
    remove_image(&docker, &tag).await;
}

#[tokio::test]
async fn a_missing_required_secret_fails_naming_it() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:local\nRUN --mount=type=secret,id=api_token,required=true cat /run/secrets/api_token\n",
    )
    .unwrap();
    let session = Session::new()
        .attach(
            FileSync::new()
                .dir("context", ctx.path())
                .dir("dockerfile", ctx.path()),
        )
        .attach(Secrets::new().bytes("other", b"x".to_vec()));
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let err = rest_build(
        &docker,
        &options(&id, &unique("bk-rest-nosecret"), true),
        Body::empty(),
    )
    .await
    .unwrap_err();
    handle.close().await.unwrap();
    assert!(err.contains("api_token"), "{err}");
}

#[tokio::test]
async fn ssh_mount_reaches_a_real_agent() {
    let env = TestEnv::get();
    let docker = env.docker();
    let agent = Agent::start();
    let ctx = tempfile::tempdir().unwrap();
    rootfs_with("/usr/bin/ssh-add", &ctx.path().join("sshroot"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:local\nCOPY sshroot/ /\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && ssh-add -L > /keys\n",
    )
    .unwrap();
    let session = Session::new()
        .attach(
            FileSync::new()
                .dir("context", ctx.path())
                .dir("dockerfile", ctx.path()),
        )
        .attach(SshForward::new().agent("default", &agent.socket));
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let tag = unique("bk-rest-ssh");
    rest_build(&docker, &options(&id, &tag, true), Body::empty())
        .await
        .unwrap();
    handle.close().await.unwrap();
    let (code, keys) = run_image(&docker, &tag, &["cat", "/keys"]).await;
    assert_eq!(code, 0);
    // `ssh-add -L` prints "type base64 comment", as the .pub file has it.
    assert_eq!(keys.trim(), agent.public_key.trim());
    remove_image(&docker, &tag).await;
}

async fn pull_with(
    env: &TestEnv,
    creds: buildkit_session::Credentials,
    tag: &str,
) -> Result<(), String> {
    let docker = env.docker();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:local\nRUN echo pulled-with-credentials > /proof\n",
            env.auth_registry
        ),
    )
    .unwrap();
    let auth = buildkit_session::Auth::none().credentials(env.auth_registry.clone(), creds);
    let session = Session::new()
        .attach(
            FileSync::new()
                .dir("context", ctx.path())
                .dir("dockerfile", ctx.path()),
        )
        .attach(auth);
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await.unwrap();
    let res = rest_build(&docker, &options(&id, tag, true).pull(true), Body::empty()).await;
    handle.close().await.unwrap();
    res.map(|_| ())
}

/// The environment's registry has TLS with a CA made by `cargo xtask env up` (trusted by
/// dockerd) and htpasswd users.
#[tokio::test]
async fn a_tls_htpasswd_registry_is_pulled_only_with_the_right_credentials() {
    let env = TestEnv::get();
    let tag = unique("bk-rest-auth");

    let err = pull_with(
        &env,
        buildkit_session::Credentials::basic(&env.auth_user, "wrong"),
        &tag,
    )
    .await
    .unwrap_err();
    let lower = err.to_lowercase();
    assert!(
        lower.contains("401")
            || lower.contains("unauthorized")
            || lower.contains("authentication required"),
        "{err}"
    );

    pull_with(
        &env,
        buildkit_session::Credentials::basic(&env.auth_user, &env.auth_password),
        &tag,
    )
    .await
    .unwrap();
    let (code, out) = run_image(&env.docker(), &tag, &["cat", "/proof"]).await;
    assert_eq!((code, out.as_str()), (0, "pulled-with-credentials\n"));
    remove_image(&env.docker(), &tag).await;
    remove_image(
        &env.docker(),
        &format!("{}/busybox:local", env.auth_registry),
    )
    .await;
}
