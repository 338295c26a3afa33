//! Containers, logs, wait, exec and events against the real dockerd.

use std::time::Duration;

use docker_api::containers::{LogsOptions, RemoveContainerOptions, WaitCondition};
use docker_api::exec::ExecStartOptions;
use docker_api::system::EventsOptions;
use docker_api::{ContainerConfig, Docker, ExecConfig, Filters, StreamKind};
use futures_util::{StreamExt, TryStreamExt};
use tests::{Cleanup, Leftover, TestEnv, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "busybox:local";

/// A running container that sleeps, for exec tests.
async fn sleeper(env: &TestEnv, docker: &Docker, label: &str) -> Cleanup {
    let config = ContainerConfig::new(BASE)
        .cmd(["sleep", "300"])
        .network_mode("none")
        .label("docker-api-test", label);
    let id = docker.containers().create(&config).await.unwrap().id;
    let guard = Cleanup::new(env, Leftover::Container(id.clone()));
    docker.containers().start(&id).await.unwrap();
    guard
}

#[tokio::test]
async fn container_lifecycle_with_logs_wait_list_and_inspect() {
    let env = TestEnv::get();
    let docker = env.docker();
    let label = unique_name("lifecycle");
    let volume = unique_name("vol");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host").unwrap();
    let config = ContainerConfig::new(BASE)
        .name(&label)
        .cmd([
            "sh",
            "-c",
            "echo \"$GREETING from $(pwd) as $(id -u)\"; cat /host/in.txt; echo; \
             echo oops >&2; touch /named/ok; ls -d /anon; exit 7",
        ])
        .env("GREETING", "hello")
        .working_dir("/tmp")
        .user("0")
        .label("docker-api-test", &label)
        .bind(format!("{}:/host:ro", dir.path().display()))
        .bind(format!("{volume}:/named"))
        .volume("/anon")
        .network_mode("none")
        // Privileged containers cannot start in this sandbox ("unable to apply
        // caps"); the field's serialisation has a unit test.
        .privileged(false);
    let created = docker.containers().create(&config).await.unwrap();
    let _volume_guard = Cleanup::new(&env, Leftover::Volume(volume.clone()));
    let _guard = Cleanup::new(&env, Leftover::Container(created.id.clone()));

    // Listed by label filter before it starts (all=true).
    let listed = docker
        .containers()
        .list(
            true,
            &Filters::new().label(format!("docker-api-test={label}")),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, created.id);
    assert_eq!(listed[0].state.as_deref(), Some("created"));

    docker.containers().start(&created.id).await.unwrap();
    let exit = docker
        .containers()
        .wait(&created.id, WaitCondition::NotRunning)
        .await
        .unwrap();
    assert_eq!(exit.status_code, 7);

    let logs: Vec<_> = docker
        .containers()
        .logs(&created.id, &LogsOptions::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let of = |k| -> String {
        logs.iter()
            .filter(|o| o.kind == k)
            .map(|o| String::from_utf8_lossy(&o.data).into_owned())
            .collect()
    };
    assert_eq!(
        of(StreamKind::Stdout),
        "hello from /tmp as 0\nfrom the host\n/anon\n"
    );
    assert_eq!(of(StreamKind::Stderr), "oops\n");

    let only_err: Vec<_> = docker
        .containers()
        .logs(&created.id, &LogsOptions::new().stdout(false))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(only_err.iter().all(|o| o.kind == StreamKind::Stderr));

    let info = docker.containers().inspect(&created.id).await.unwrap();
    let state = info.state.unwrap();
    assert_eq!(state.status, "exited");
    assert_eq!(state.exit_code, 7);
    let cfg = info.config.unwrap();
    assert!(cfg.env.contains(&"GREETING=hello".to_string()), "{cfg:?}");
    assert_eq!(cfg.labels.get("docker-api-test"), Some(&label));
    assert_eq!(info.name.as_deref(), Some(&*format!("/{label}")));
    let host = info.host_config.unwrap();
    assert_eq!(host.network_mode, "none");
    assert!(!host.privileged);
    assert!(
        info.mounts
            .iter()
            .any(|m| m.r#type == "volume" && m.name.as_deref() == Some(&*volume)),
        "{:?}",
        info.mounts
    );

    docker
        .containers()
        .remove(&created.id, &RemoveContainerOptions::new().volumes(true))
        .await
        .unwrap();
    let err = docker.containers().inspect(&created.id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    docker.volumes().remove(&volume, false).await.unwrap();
}

#[tokio::test]
async fn follow_logs_stop_kill_and_auto_remove() {
    let env = TestEnv::get();
    let docker = env.docker();
    let config = ContainerConfig::new(BASE)
        .cmd(["sh", "-c", "echo one; sleep 1; echo two; sleep 300"])
        .network_mode("none");
    let id = docker.containers().create(&config).await.unwrap().id;
    let _guard = Cleanup::new(&env, Leftover::Container(id.clone()));
    docker.containers().start(&id).await.unwrap();
    // Starting twice is not an error.
    docker.containers().start(&id).await.unwrap();

    let mut logs = docker
        .containers()
        .logs(&id, &LogsOptions::new().follow(true))
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("two") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), logs.next())
            .await
            .expect("followed logs deliver new output")
            .expect("stream still open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    assert_eq!(seen, "one\ntwo\n");

    docker
        .containers()
        .kill(&id, Some("SIGKILL"))
        .await
        .unwrap();
    let exit = docker
        .containers()
        .wait(&id, WaitCondition::NotRunning)
        .await
        .unwrap();
    assert_eq!(exit.status_code, 137);
    // The followed stream ends once the container is gone.
    let rest = tokio::time::timeout(Duration::from_secs(20), logs.count()).await;
    assert!(rest.is_ok(), "the followed log stream did not end");
    // Stopping a stopped container is not an error.
    docker.containers().stop(&id, Some(1)).await.unwrap();

    // auto-remove: once stopped, the container is removed.
    let config = ContainerConfig::new(BASE)
        .cmd(["sleep", "300"])
        .network_mode("none")
        .auto_remove(true);
    let id = docker.containers().create(&config).await.unwrap().id;
    let _guard2 = Cleanup::new(&env, Leftover::Container(id.clone()));
    docker.containers().start(&id).await.unwrap();
    let waiter = {
        let docker = docker.clone();
        let id = id.clone();
        tokio::spawn(async move { docker.containers().wait(&id, WaitCondition::Removed).await })
    };
    docker.containers().stop(&id, Some(0)).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.status_code, 137);
    let err = docker.containers().inspect(&id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn exec_run_separates_stdout_stderr_and_exit_code() {
    let env = TestEnv::get();
    let docker = env.docker();
    let c = sleeper(&env, &docker, "exec-run").await;
    let out = docker
        .exec()
        .run(
            c.id(),
            &ExecConfig::new(["sh", "-c", "echo out; echo err >&2; echo \"$X\"; exit 3"])
                .env("X", "env-ok"),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\nenv-ok\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);

    // With a TTY the output is raw: stdout and stderr merged, CRLF line endings.
    let out = docker
        .exec()
        .run(
            c.id(),
            &ExecConfig::new(["sh", "-c", "echo out; echo err >&2"]).tty(true),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\r\nerr\r\n");
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit_code, 0);

    // A larger output crosses many frames and reads.
    let out = docker
        .exec()
        .run(
            c.id(),
            &ExecConfig::new(["sh", "-c", "seq 1 100000; seq 1 1000 >&2"]),
        )
        .await
        .unwrap();
    let expected: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out.stderr).unwrap(), expected);
}

#[tokio::test]
async fn exec_duplex_writes_stdin_reads_stdout_and_half_closes() {
    let env = TestEnv::get();
    let docker = env.docker();
    let c = sleeper(&env, &docker, "exec-duplex").await;
    // Like `buildctl dial-stdio`: a byte pipe through the process.
    let id = docker
        .exec()
        .create(
            c.id(),
            &ExecConfig::new(["sh", "-c", "echo starting >&2; cat; echo done >&2"])
                .attach_stdin(true),
        )
        .await
        .unwrap();
    let mut io = docker
        .exec()
        .start(&id, &ExecStartOptions::new())
        .await
        .unwrap();
    let stderr = io.stderr();

    io.write_all(b"ping\n").await.unwrap();
    let mut echo = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(20), io.read_exact(&mut echo))
        .await
        .expect("cat echoes stdin")
        .unwrap();
    assert_eq!(&echo, b"ping\n");

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(io);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        // Closes cat's stdin; its output must still arrive.
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut back))
        .await
        .expect("output ends after stdin is closed")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echoed bytes differ");
    assert_eq!(stderr.to_string_lossy(), "starting\ndone\n");
    assert_eq!(docker.exec().exit_code(&id).await.unwrap(), 0);
    let inspect = docker.exec().inspect(&id).await.unwrap();
    assert!(!inspect.running);
    assert_eq!(inspect.container_id, c.id());
}

#[tokio::test]
async fn events_report_a_container_start() {
    let env = TestEnv::get();
    let docker = env.docker();
    let config = ContainerConfig::new(BASE)
        .cmd(["true"])
        .network_mode("none");
    let id = docker.containers().create(&config).await.unwrap().id;
    let _guard = Cleanup::new(&env, Leftover::Container(id.clone()));
    // `since` makes the daemon replay what happened between subscribing and the
    // stream's start, so the start event cannot slip through.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let mut events = docker
        .system()
        .events(
            &EventsOptions::new().since(since.to_string()).filters(
                Filters::new()
                    .add("container", &id)
                    .add("type", "container"),
            ),
        )
        .await
        .unwrap();
    docker.containers().start(&id).await.unwrap();
    let start = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.action.as_deref() == Some("start") {
                return ev;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("a start event arrives");
    assert_eq!(start.kind.as_deref(), Some("container"));
    let actor = start.actor.unwrap();
    assert_eq!(actor.id, id);
    assert_eq!(
        actor.attributes.get("image").map(String::as_str),
        Some(BASE)
    );
    assert!(start.time.unwrap() >= since as i64);
}
