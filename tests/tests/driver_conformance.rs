//! One conformance suite, run against every driver: dockerd's embedded BuildKit
//! (moby), a buildkitd over its unix socket (remote) and over TCP with mutual TLS
//! (remote-mtls), and a buildkit container started through Docker (docker-container).
//!
//! Results are checked in Docker: the moby driver exports to dockerd's store, the
//! others stream a `docker` tar into it with `DockerLoad`.

use std::time::{Duration, Instant};

use buildkit_driver::{
    Build, DockerContainer, Driver, Moby, NamedContext, Network, Output, Remote,
};
use buildkit_export::{DockerLoad, Moby as MobyOutput};
use buildkit_session::{Secrets, SshForward};
use docker_api::tls::TlsOptions;
use futures_util::StreamExt;
use tests::{
    Agent, MtlsBuildkitd, TestEnv, remove_image, rootfs_with, run_image, unique_name as unique,
};

/// The base image: dockerd uses its local copy (its 20.10 BuildKit can crash when
/// parallel builds pull the same new image); buildkitd pulls from the local registry.
fn base_image(driver: &dyn Driver, env: &TestEnv) -> String {
    if driver.name() == "moby" {
        "busybox:local".to_string()
    } else {
        format!("{}/busybox:local", env.registry)
    }
}

/// The image output that lands in dockerd for this driver.
fn image_output(driver: &dyn Driver, env: &TestEnv, tag: &str) -> Box<dyn Output> {
    if driver.name() == "moby" {
        Box::new(MobyOutput::named(tag))
    } else {
        Box::new(DockerLoad::new(env.docker()).name(tag))
    }
}

struct BoxedOutput(Box<dyn Output>);

impl Output for BoxedOutput {
    fn exporter_type(&self) -> String {
        self.0.exporter_type()
    }
    fn attrs(&self) -> std::collections::BTreeMap<String, String> {
        self.0.attrs()
    }
    fn prepare(
        self: Box<Self>,
        ctx: &mut buildkit_driver::Prepare<'_>,
    ) -> buildkit_driver::Result<Option<buildkit_driver::Finish>> {
        self.0.prepare(ctx)
    }
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    d
}

/// Builds `dir` into `tag` in dockerd; returns the result or the build error.
async fn build_image(
    driver: &dyn Driver,
    env: &TestEnv,
    build: Build,
    tag: &str,
) -> Result<buildkit_driver::Solved, buildkit_driver::Error> {
    let build = build
        .network(Network::Host)
        .output(BoxedOutput(image_output(driver, env, tag)));
    let mut handle = driver.solve(build).await?;
    let progress = handle.progress();
    let drain = tokio::spawn(progress.collect::<Vec<_>>());
    let res = handle.await;
    drain.await.unwrap();
    res
}

async fn two_stage(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {base} as builder1\nRUN touch bollard.txt\nFROM {base} as builder2\nRUN --mount=type=bind,from=builder1,target=mnt cp mnt/bollard.txt buildkit-bollard.txt\nENTRYPOINT ls buildkit-bollard.txt\n"
        ),
    )]);
    let tag = unique(&format!("conf-{}-two-stage", driver.name()));
    build_image(driver, &env, Build::dockerfile(ctx.path()), &tag)
        .await
        .unwrap();
    let (code, out) = run_image(&env.docker(), &tag, &[]).await;
    assert_eq!((code, out.trim()), (0, "buildkit-bollard.txt"));
    remove_image(&env.docker(), &tag).await;
}

async fn args_target_labels(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {base} AS base\nRUN echo base > /base\n\
             FROM base AS wanted\nARG GREETING=unset\nRUN echo \"$GREETING\" > /greeting\n\
             FROM base AS other\nRUN exit 1\n"
        ),
    )]);
    let tag = unique(&format!("conf-{}-args", driver.name()));
    let build = Build::dockerfile(ctx.path())
        .target("wanted")
        .build_arg("GREETING", "hello-conformance")
        .label("org.example.conformance", "yes")
        .label("org.example.driver", driver.name());
    build_image(driver, &env, build, &tag).await.unwrap();
    let (code, out) = run_image(&env.docker(), &tag, &["cat", "/greeting"]).await;
    assert_eq!((code, out.as_str()), (0, "hello-conformance\n"));
    let inspect = env.docker().images().inspect(&tag).await.unwrap();
    let labels = inspect.config.map(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get("org.example.conformance").map(String::as_str),
        Some("yes"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("org.example.driver").map(String::as_str),
        Some(driver.name()),
        "{labels:?}"
    );
    remove_image(&env.docker(), &tag).await;
}

async fn named_context(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nCOPY --from=extra data.txt /data.txt\n"),
    )]);
    let extra = context(&[("data.txt", "from the named context\n")]);
    let tag = unique(&format!("conf-{}-named", driver.name()));
    let build = Build::dockerfile(ctx.path())
        .named_context("extra", NamedContext::Local(extra.path().into()));
    if !driver.capabilities().await.unwrap().named_contexts {
        // dockerd 20.10's frontend predates named contexts: refused before solving,
        // never looked up as an image on Docker Hub.
        let err = build_image(driver, &env, build, &tag).await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(err.to_string().contains("named contexts"), "{err}");
        return;
    }
    build_image(driver, &env, build, &tag).await.unwrap();
    let (_, out) = run_image(&env.docker(), &tag, &["cat", "/data.txt"]).await;
    assert_eq!(out, "from the named context\n");
    remove_image(&env.docker(), &tag).await;
}

async fn secret_mount(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN --mount=type=secret,id=token cat /run/secrets/token > /out\n"),
    )]);
    let tag = unique(&format!("conf-{}-secret", driver.name()));
    let secret = format!("s3cr3t-for-{}\n", driver.name());
    let build = Build::dockerfile(ctx.path())
        .no_cache()
        .secrets(Secrets::new().bytes("token", secret.clone().into_bytes()));
    build_image(driver, &env, build, &tag).await.unwrap();
    let (_, out) = run_image(&env.docker(), &tag, &["cat", "/out"]).await;
    assert_eq!(out, secret);
    remove_image(&env.docker(), &tag).await;
}

async fn ssh_mount(driver: &dyn Driver) {
    let env = TestEnv::get();
    let agent = Agent::start();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nCOPY sshroot/ /\nRUN --mount=type=ssh ssh-add -L > /keys\n"),
    )]);
    rootfs_with("/usr/bin/ssh-add", &ctx.path().join("sshroot"));
    let tag = unique(&format!("conf-{}-ssh", driver.name()));
    // No cache: a cached step would show an earlier run's agent.
    let build = Build::dockerfile(ctx.path())
        .no_cache()
        .ssh(SshForward::new().agent("default", &agent.socket));
    build_image(driver, &env, build, &tag).await.unwrap();
    let (_, keys) = run_image(&env.docker(), &tag, &["cat", "/keys"]).await;
    assert_eq!(keys.trim(), agent.public_key.trim());
    remove_image(&env.docker(), &tag).await;
}

async fn malformed_dockerfile(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nFORM nothing\nRUN true\n"),
    )]);
    let err = build_image(
        driver,
        &env,
        Build::dockerfile(ctx.path()),
        &unique("conf-malformed"),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(err.solve_error().is_some(), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("FORM"), "{msg}");
}

async fn failing_run(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo about to fail && exit 3\n"),
    )]);
    let err = build_image(
        driver,
        &env,
        Build::dockerfile(ctx.path()),
        &unique("conf-failing"),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("echo about to fail && exit 3"), "{msg}");
    assert!(msg.contains("exit code: 3"), "{msg}");
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

async fn cancel_stops_on_daemon(driver: &dyn Driver) {
    let env = TestEnv::get();
    let base = base_image(driver, &env);
    // A distinctive duration to find the process by.
    let secs = format!("{}.{}", 300 + std::process::id() % 100, driver.name().len());
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN sleep {secs}\n"))]);
    let build = Build::dockerfile(ctx.path())
        .network(Network::Host)
        .no_cache();
    let mut handle = driver.solve(build).await.unwrap();
    let mut progress = handle.progress();
    let needle = format!("sleep {secs}");
    let t = Instant::now();
    while processes_with(&needle).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the RUN step never started"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.next()).await;
    }
    drop(progress);
    drop(handle);
    let t = Instant::now();
    while !processes_with(&needle).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the build kept running on the daemon after it was cancelled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            async fn driver() -> Box<dyn Driver> {
                $make.await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn two_stage_dockerfile() {
                two_stage(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn build_args_target_and_labels() {
                args_target_labels(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_named_context() {
                named_context(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_secret_mount() {
                secret_mount(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn an_ssh_mount_with_a_real_agent() {
                ssh_mount(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_malformed_dockerfile_names_the_line() {
                malformed_dockerfile(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_failing_run_names_command_and_exit_code() {
                failing_run(&*driver().await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_cancelled_build_stops_on_the_daemon() {
                cancel_stops_on_daemon(&*driver().await).await
            }
        }
    };
}

async fn moby_driver() -> Box<dyn Driver> {
    Box::new(Moby::new(TestEnv::get().docker()))
}

async fn remote_unix() -> Box<dyn Driver> {
    Box::new(Remote::new(&TestEnv::get().buildkit_host).unwrap())
}

async fn remote_mtls() -> Box<dyn Driver> {
    let env = TestEnv::get();
    let daemon = MtlsBuildkitd::get(&env);
    Box::new(
        Remote::new(&daemon.address)
            .unwrap()
            .tls(TlsOptions::from_cert_dir(&daemon.client_dir))
            .unwrap(),
    )
}

/// The locally made buildkit image in a container. Unprivileged with the capabilities
/// buildkitd needs: privileged containers cannot start on machines whose bounding set
/// lacks a capability (as in this sandbox, which has no CAP_SYS_RESOURCE).
async fn docker_container() -> Box<dyn Driver> {
    let env = TestEnv::get();
    let driver = DockerContainer::builder(env.docker())
        .image(&env.buildkit_image)
        .name("buildkit-rs-conformance")
        .privileged(false)
        .cap_add("ALL")
        .cap_drop("SYS_RESOURCE")
        .security_opt("seccomp=unconfined")
        .security_opt("apparmor=unconfined")
        .bind("/sys/fs/cgroup:/sys/fs/cgroup:rw")
        .buildkitd_flag("--oci-worker-net=host")
        .bootstrap()
        .await
        .unwrap();
    Box::new(driver)
}

conformance!(moby, moby_driver());
conformance!(remote, remote_unix());
conformance!(remote_mtls, remote_mtls());
conformance!(docker_container, docker_container());
