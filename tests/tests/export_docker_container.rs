//! The seed's second example end to end on the docker-container driver: a two-stage
//! Dockerfile built with a `mode=max` registry cache and pushed, both to a registry
//! that wants the session's credentials; the builder's cache pruned; the rebuild takes
//! every step from the registry cache; the pushed image runs in dockerd.

use buildkit_driver::control::{PruneOptions, prune};
use buildkit_driver::{Build, DockerContainer, Lifecycle, Network};
use buildkit_export::{Image, RegistryCache};
use buildkit_session::{Auth, Credentials};
use docker_api::RegistryAuth;
use docker_api::images::PullOptions;
use tests::{
    AuthRegistry, Cleanup, Leftover, TestEnv, context_dir, run_image, solve_with_events,
    unique_name, vertex_cached, vertex_states,
};

/// The locally made buildkit image, unprivileged (privileged containers cannot start
/// where the bounding set lacks a capability), on the host network so that it reaches
/// registries on 127.0.0.1.
async fn builder(env: &TestEnv) -> DockerContainer {
    DockerContainer::builder(env.docker())
        .image(&env.buildkit_image)
        .name("buildkit-rs-export")
        .lifecycle(Lifecycle::Remove)
        .privileged(false)
        .cap_add("ALL")
        .cap_drop("SYS_RESOURCE")
        .security_opt("seccomp=unconfined")
        .security_opt("apparmor=unconfined")
        .bind("/sys/fs/cgroup:/sys/fs/cgroup:rw")
        .buildkitd_flag("--oci-worker-net=host")
        .bootstrap()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stage_with_registry_cache_and_an_authenticated_push() {
    let env = TestEnv::get();
    let docker = env.docker();
    let driver = builder(&env).await;
    let registry = AuthRegistry::start("builder", "p4ss-w0rd");
    let repo = format!("{}/{}", registry.host, unique_name("seed"));
    let cache_ref = format!("{repo}:cache");
    let base = format!("{}/busybox:local", env.registry);
    let ctx = context_dir(&[(
        "Dockerfile",
        &format!(
            "FROM {base} as builder1\nRUN touch bollard.txt\n\
             FROM {base} as builder2\n\
             RUN --mount=type=bind,from=builder1,target=mnt cp mnt/bollard.txt buildkit-bollard.txt\n\
             ENTRYPOINT ls buildkit-bollard.txt\n"
        ),
    )]);
    let auth = || {
        Auth::none().credentials(
            &registry.host,
            Credentials::basic(&registry.user, &registry.password),
        )
    };

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .auth(auth())
        .output(Image::new().name(format!("{repo}:1")).push())
        .cache_to(RegistryCache::new(&cache_ref).mode_max());
    let (res, events) = solve_with_events(&driver, build).await;
    let first = res.unwrap();
    assert!(!vertex_cached(&events, "RUN touch bollard.txt"));

    prune(
        &driver,
        PruneOptions {
            all: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .auth(auth())
        .output(Image::new().name(format!("{repo}:2")).push())
        .cache_from(RegistryCache::new(&cache_ref));
    let (res, events) = solve_with_events(&driver, build).await;
    let second = res.unwrap();
    for step in ["RUN touch bollard.txt", "cp mnt/bollard.txt"] {
        assert!(
            vertex_cached(&events, step),
            "{step}: {:?}",
            vertex_states(&events, step)
        );
    }
    assert_eq!(
        first.digest(),
        second.digest(),
        "the same image, from the cache"
    );

    let by_digest = format!("{repo}@{}", second.digest().unwrap());
    let _cleanup = Cleanup::new(&env, Leftover::Image(by_digest.clone()));
    let pull_auth =
        RegistryAuth::password(&registry.user, &registry.password).server(&registry.host);
    docker
        .images()
        .pull(&PullOptions::new(&by_digest).auth(pull_auth))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let (code, out) = run_image(&docker, &by_digest, &[]).await;
    assert_eq!((code, out.trim()), (0, "buildkit-bollard.txt"));

    driver.shutdown().await.unwrap();
}
