//! Cache backends against the standalone buildkitd: a registry cache and a local cache
//! directory, each exported with `mode=max`, the daemon's cache pruned, and imported
//! again, so that the expensive step comes from the imported cache.
//!
//! Every test here prunes buildkitd's whole cache, so they run one at a time.

use buildkit_driver::control::{PruneOptions, prune};
use buildkit_driver::progress::{Event, VertexState};
use buildkit_driver::{Build, Driver, Network, Remote};
use buildkit_export::{Image, InlineCache, LocalCache, LocalDir, RegistryCache, oci};
use tests::{TestEnv, context_dir, solve_with_events, unique_name, vertex_cached, vertex_states};

/// Pruning removes what a concurrent build in this binary uses: one test at a time.
static BUILDKITD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Dockerfile whose second step is worth caching; `token` makes it unique to the
/// test run, so that only an imported cache can have it.
fn dockerfile(env: &TestEnv, token: &str) -> tempfile::TempDir {
    context_dir(&[(
        "Dockerfile",
        &format!(
            "FROM {}/busybox:local\n\
             RUN echo {token} > /token && dd if=/dev/urandom of=/big bs=1M count=8 && sleep 1\n\
             RUN cat /token\n",
            env.registry
        ),
    )])
}

const STEP: &str = "dd if=/dev/urandom";

async fn prune_all(driver: &dyn Driver) {
    let removed = prune(
        driver,
        PruneOptions {
            all: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!removed.is_empty(), "the prune removed nothing");
}

fn assert_ran(events: &[Event]) {
    let states = vertex_states(events, STEP);
    assert!(
        states
            .iter()
            .any(|s| matches!(s, VertexState::Completed { .. })),
        "{states:?}"
    );
    assert!(!vertex_cached(events, STEP), "{states:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_cache_mode_max_survives_a_prune() {
    let _one = BUILDKITD.lock().await;
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let token = unique_name("regcache");
    let ctx = dockerfile(&env, &token);
    let cache_ref = format!("{}/{token}:cache", env.registry);

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .cache_to(RegistryCache::new(&cache_ref).mode_max());
    let (res, events) = solve_with_events(&driver, build).await;
    res.unwrap();
    assert_ran(&events);

    prune_all(&driver).await;

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .cache_from(RegistryCache::new(&cache_ref));
    let (res, events) = solve_with_events(&driver, build).await;
    res.unwrap();
    assert!(
        vertex_cached(&events, STEP),
        "{:?}",
        vertex_states(&events, STEP)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_cache_mode_max_survives_a_prune() {
    let _one = BUILDKITD.lock().await;
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let token = unique_name("localcache");
    let ctx = dockerfile(&env, &token);
    let dir = tempfile::tempdir().unwrap();
    let cache = LocalCache::new(dir.path().join("cache")).mode_max();

    // First build: nothing to import yet (a warning, not a failure), then export.
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .cache_from(cache.clone())
        .cache_to(cache.clone());
    let (res, events) = solve_with_events(&driver, build).await;
    let solved = res.unwrap();
    assert_ran(&events);
    let warned = events.iter().any(|e| {
        matches!(e, Event::Warning(w)
            if w.short.contains("local cache import") && w.short.contains("skipped"))
    });
    assert!(warned, "no warning about the skipped import");

    // index.json names the manifest the daemon reported, and every blob verifies.
    let reported: serde_json::Value =
        serde_json::from_str(&solved.exporter_response["cache.manifest"]).unwrap();
    let digest = reported["digest"].as_str().unwrap().to_string();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.dir().join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], digest.as_str());
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert!(cache.dir().join("oci-layout").is_file());
    let layout = oci::read_path(cache.dir()).await.unwrap();
    let manifest = layout
        .manifest_by_digest(&digest.parse().unwrap())
        .expect("the cache manifest is in the layout");
    // mode=max: the 8 MiB step's layer is in the cache, not only the final result.
    assert!(
        manifest.manifest.layers.len() >= 2,
        "{:?}",
        manifest.manifest.layers
    );
    assert!(layout.blobs.iter().any(|b| b.size > 8 << 20));
    let ingest: Vec<_> = std::fs::read_dir(cache.dir().join("ingest"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(ingest.is_empty(), "writes left behind: {ingest:?}");

    prune_all(&driver).await;

    // Exporting the filesystem makes the daemon read the cached layers back through
    // the session (the 8 MiB one in many chunks).
    let rootfs = dir.path().join("rootfs");
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .cache_from(cache.clone())
        .output(LocalDir::new(&rootfs));
    let (res, events) = solve_with_events(&driver, build).await;
    res.unwrap();
    assert!(
        vertex_cached(&events, STEP),
        "{:?}",
        vertex_states(&events, STEP)
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("token")).unwrap(),
        format!("{token}\n")
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("big")).unwrap().len(),
        8 << 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_cache_in_a_pushed_image_survives_a_prune() {
    let _one = BUILDKITD.lock().await;
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let token = unique_name("inlinecache");
    let ctx = dockerfile(&env, &token);
    let image = format!("{}/{token}:1", env.registry);

    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .output(Image::new().name(&image).push())
        .cache_to(InlineCache::new());
    let (res, events) = solve_with_events(&driver, build).await;
    res.unwrap();
    assert_ran(&events);

    prune_all(&driver).await;

    // Inline cache is imported with the registry backend, from the image itself.
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .cache_from(RegistryCache::new(&image));
    let (res, events) = solve_with_events(&driver, build).await;
    res.unwrap();
    assert!(
        vertex_cached(&events, STEP),
        "{:?}",
        vertex_states(&events, STEP)
    );
}
