//! The control operations, session attach/close on both transports, tar contexts over
//! Upload, and the docker-container driver's lifecycle and readiness timeout.

use std::time::Duration;

use buildkit_driver::control::{self, PruneOptions};
use buildkit_driver::{Build, DockerContainer, Driver, Lifecycle, Network, Remote};
use buildkit_proto::moby::buildkit::v1::{BuildHistoryEventType, BuildHistoryRequest};
use buildkit_session::context::{TarOptions, context_tar};
use futures_util::StreamExt;
use tests::{Cleanup, Leftover, TestEnv, unique_name};

fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

/// The history record of build `reference` once it has completed.
async fn completed_record(
    driver: &Remote,
    reference: &str,
) -> Option<buildkit_proto::moby::buildkit::v1::BuildHistoryRecord> {
    let mut history = control::build_history(
        driver,
        BuildHistoryRequest {
            early_exit: true,
            r#ref: reference.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), history.next())
        .await
        .expect("a history answer")?
        .unwrap();
    (event.r#type() == BuildHistoryEventType::Complete).then(|| event.record.unwrap())
}

#[tokio::test]
async fn control_operations_report_workers_version_usage_and_history() {
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();

    let workers = control::workers(&driver).await.unwrap();
    assert!(!workers.is_empty());
    let info = control::info(&driver).await.unwrap();
    assert_eq!(info.version, "v0.34.2");

    // A build that leaves a record in the cache and in the history.
    let marker = unique_name("control-ops");
    let ctx = context(&format!(
        "FROM {}/busybox:local\nRUN echo {marker} > /m\n",
        env.registry
    ));
    let handle = driver
        .solve(Build::dockerfile(ctx.path()).network(Network::Host))
        .await
        .unwrap();
    let reference = handle.reference().to_string();
    handle.await.unwrap();

    let usage = control::disk_usage(&driver, vec![]).await.unwrap();
    assert!(usage.iter().any(|r| r.size > 0), "{usage:?}");

    let record = completed_record(&driver, &reference)
        .await
        .expect("the finished build is in the history");
    assert_eq!(record.r#ref, reference);
    assert_eq!(record.frontend, "dockerfile.v0");
    assert!(record.num_total_steps > 0, "{record:?}");

    // Prune with a filter that matches nothing removes nothing.
    let removed = control::prune(
        &driver,
        PruneOptions {
            filters: vec!["id==no-such-record".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(removed.is_empty(), "{removed:?}");
}

#[tokio::test]
async fn cancelling_a_handle_stops_the_build_on_the_daemon() {
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let marker = unique_name("cancel-me");
    let ctx = context(&format!(
        "FROM {}/busybox:local\nRUN echo {marker} && sleep 300\n",
        env.registry
    ));
    let mut handle = driver
        .solve(
            Build::dockerfile(ctx.path())
                .network(Network::Host)
                .no_cache(),
        )
        .await
        .unwrap();
    let reference = handle.reference().to_string();
    let mut progress = handle.progress();
    // Wait until the RUN step is really running.
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(e) = progress.next().await {
            if let buildkit_driver::progress::Event::Log(l) = e
                && String::from_utf8_lossy(&l.data).contains(&marker)
            {
                return;
            }
        }
        panic!("progress ended before the RUN step started");
    })
    .await
    .expect("the RUN step starts");
    handle.cancel();

    // The daemon records the build as finished, with a cancellation, long before
    // the `sleep` would have ended.
    let record = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(record) = completed_record(&driver, &reference).await {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the build completes on the daemon after the cancel");
    let error = record.error.expect("a cancelled build has an error");
    assert_eq!(error.code, tonic::Code::Cancelled as i32, "{error:?}");
}

#[tokio::test]
async fn a_tar_context_is_pulled_through_upload() {
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let ctx = context(&format!(
        "FROM {}/busybox:local\nCOPY payload.txt /payload.txt\nRUN cat /payload.txt\n",
        env.registry
    ));
    std::fs::write(ctx.path().join("payload.txt"), "came as a tar\n").unwrap();
    let tar = context_tar(ctx.path(), &TarOptions::default()).unwrap();
    let mut handle = driver
        .solve(Build::tar_context(tar).network(Network::Host).no_cache())
        .await
        .unwrap();
    let events: Vec<_> = handle.progress().collect::<Vec<_>>().await;
    handle.await.unwrap();
    let logs: String = events
        .iter()
        .filter_map(|e| match e {
            buildkit_driver::progress::Event::Log(l) => {
                Some(String::from_utf8_lossy(&l.data).into_owned())
            }
            _ => None,
        })
        .collect();
    assert!(logs.contains("came as a tar"), "{logs}");
}

/// A session closed by its owner is gone on the daemon: a solve that needs it fails.
async fn closed_session_is_gone(driver: &dyn Driver, by_drop: bool) {
    use buildkit_proto::moby::buildkit::v1::SolveRequest;
    let ctx = context("FROM scratch\nCOPY Dockerfile /\n");
    std::fs::write(
        ctx.path().join("Other.Dockerfile"),
        "FROM scratch\nCOPY Other.Dockerfile /\n",
    )
    .unwrap();
    let session = buildkit_session::Session::new().attach(
        buildkit_session::FileSync::new()
            .dir("context", ctx.path())
            .dir("dockerfile", ctx.path()),
    );
    let id = session.id().to_string();
    let handle = driver.attach(session).await.unwrap();
    let mut control = driver.control().await.unwrap();
    // The daemon caches a local source by session id and patterns: each request reads
    // a Dockerfile it has not read before, so it must come through the session.
    let request = |filename: &str| SolveRequest {
        r#ref: buildkit_session::new_id(),
        session: id.clone(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs: [("filename".to_string(), filename.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    control
        .solve(request("Dockerfile"))
        .await
        .expect("solving with the live session");
    if by_drop {
        // Dropping ends it in the background.
        drop(handle);
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        handle.close().await.unwrap();
    }
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        control.solve(request("Other.Dockerfile")),
    )
    .await
    .expect("the solve ends")
    .expect_err("the session is closed");
    // Depending on how soon the daemon notices, it finds no session, finds it with
    // its connection gone, or notices while reading through it.
    let m = err.message();
    assert!(
        m.contains("no active session")
            || m.contains("connection is closing")
            || m.contains("only one connection allowed")
            || (m.contains("failed to read dockerfile") && m.contains("context canceled")),
        "{m}"
    );
}

#[tokio::test]
async fn closing_a_control_session_tunnel_ends_it_on_buildkitd() {
    let env = TestEnv::get();
    closed_session_is_gone(&Remote::new(&env.buildkit_host).unwrap(), false).await;
}

#[tokio::test]
async fn dropping_a_session_upgrade_ends_it_on_dockerd() {
    let env = TestEnv::get();
    closed_session_is_gone(&buildkit_driver::Moby::new(env.docker()), true).await;
}

fn unprivileged(
    builder: buildkit_driver::DockerContainerBuilder,
) -> buildkit_driver::DockerContainerBuilder {
    builder
        .privileged(false)
        .cap_add("ALL")
        .cap_drop("SYS_RESOURCE")
        .security_opt("seccomp=unconfined")
        .security_opt("apparmor=unconfined")
        .bind("/sys/fs/cgroup:/sys/fs/cgroup:rw")
        .buildkitd_flag("--oci-worker-net=host")
}

#[tokio::test]
async fn docker_container_lifecycle_remove_takes_container_and_volume() {
    let env = TestEnv::get();
    let docker = env.docker();
    let name = unique_name("bk-lifecycle");
    // Removed by the test itself; the guards only act when an assertion fails first.
    let _container = Cleanup::new(&env, Leftover::Container(name.clone()));
    let _volume = Cleanup::new(&env, Leftover::Volume(format!("{name}_state")));
    let driver = unprivileged(DockerContainer::builder(docker.clone()))
        .image(&env.buildkit_image)
        .name(&name)
        .env("BUILDKIT_RS_TEST", "1")
        .lifecycle(Lifecycle::Remove)
        .bootstrap()
        .await
        .unwrap();
    let inspect = docker.containers().inspect(&name).await.unwrap();
    assert!(inspect.state.is_some_and(|s| s.running));
    let volumes = docker
        .volumes()
        .list(&docker_api::Filters::new())
        .await
        .unwrap()
        .volumes;
    assert!(
        volumes.iter().any(|v| v.name == format!("{name}_state")),
        "{volumes:?}"
    );
    // A second bootstrap reuses the running container.
    let again = unprivileged(DockerContainer::builder(docker.clone()))
        .image(&env.buildkit_image)
        .name(&name)
        .bootstrap()
        .await
        .unwrap();
    assert_eq!(
        control::workers(&again).await.unwrap()[0].id,
        control::workers(&driver).await.unwrap()[0].id,
        "the same buildkitd answers"
    );
    driver.shutdown().await.unwrap();
    assert!(
        docker
            .containers()
            .inspect(&name)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let volumes = docker
        .volumes()
        .list(&docker_api::Filters::new())
        .await
        .unwrap()
        .volumes;
    assert!(
        !volumes.iter().any(|v| v.name == format!("{name}_state")),
        "{volumes:?}"
    );
}

#[tokio::test]
async fn docker_container_that_never_gets_ready_fails_with_its_logs() {
    let env = TestEnv::get();
    let docker = env.docker();
    let name = unique_name("bk-notready");
    let _container = Cleanup::new(&env, Leftover::Container(name.clone()));
    let _volume = Cleanup::new(&env, Leftover::Volume(format!("{name}_state")));
    let started = std::time::Instant::now();
    let err = unprivileged(DockerContainer::builder(docker.clone()))
        .image(&env.buildkit_image)
        .name(&name)
        .buildkitd_flag("--no-such-flag")
        .ready_timeout(Duration::from_secs(20))
        .bootstrap()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains(&name), "{err}");
    assert!(
        err.contains("no-such-flag"),
        "the container's logs are in the error: {err}"
    );
    let _ = docker
        .containers()
        .remove(
            &name,
            &docker_api::containers::RemoveContainerOptions::new().force(true),
        )
        .await;
    let _ = docker
        .volumes()
        .remove(&format!("{name}_state"), true)
        .await;
}
