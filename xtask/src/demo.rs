//! `cargo xtask demo`: builds an example Dockerfile through BuildKit with plain
//! progress and prints the image digest. Uses `BUILDKIT_HOST` or `DOCKER_HOST` when
//! they are set and reachable; otherwise starts the local daemons of `env up`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::env::{self, Layout};

/// A Dockerfile that needs no image and no network: runs on any daemon.
const SCRATCH_DOCKERFILE: &str = "\
FROM scratch AS base
COPY hello.txt /hello.txt
FROM scratch
COPY --from=base /hello.txt /greeting.txt
LABEL org.opencontainers.image.title=\"buildkit-rs demo\"
";

/// The seed's two-stage build on the local base image.
fn busybox_dockerfile(registry: &str) -> String {
    format!(
        "FROM {registry}/busybox:local AS builder1\n\
         RUN touch bollard.txt && echo built in stage one\n\
         FROM {registry}/busybox:local AS builder2\n\
         RUN --mount=type=bind,from=builder1,target=mnt cp mnt/bollard.txt buildkit-bollard.txt\n\
         COPY hello.txt /hello.txt\n\
         ENTRYPOINT [\"ls\", \"buildkit-bollard.txt\"]\n"
    )
}

/// True when `addr` (`unix://` or `tcp://`) accepts a connection.
fn reachable(addr: &str) -> bool {
    if let Some(p) = addr.strip_prefix("unix://") {
        return std::os::unix::net::UnixStream::connect(p).is_ok();
    }
    if let Some(hp) = addr.strip_prefix("tcp://") {
        use std::net::ToSocketAddrs;
        return hp
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok()
            });
    }
    false
}

pub fn run(root: &Path) -> Result<()> {
    let ctx = tempfile::tempdir()?;
    std::fs::write(ctx.path().join("hello.txt"), "hello from buildkit-rs\n")?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "run",
            "--locked",
            "--quiet",
            "-p",
            "buildkit-export",
            "--example",
            "build",
            "--",
        ])
        .arg("--dir")
        .arg(ctx.path());

    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let buildkit_host = var("BUILDKIT_HOST");
    let docker_host = var("DOCKER_HOST");
    match (&buildkit_host, &docker_host) {
        (Some(b), _) if reachable(b) => {
            println!("demo: using BUILDKIT_HOST={b}");
            std::fs::write(ctx.path().join("Dockerfile"), SCRATCH_DOCKERFILE)?;
        }
        (b, Some(d)) if reachable(d) => {
            if let Some(b) = b {
                println!("demo: BUILDKIT_HOST={b} is not reachable");
            }
            println!("demo: using DOCKER_HOST={d}");
            // The example prefers BUILDKIT_HOST: hide the unreachable one.
            cmd.env_remove("BUILDKIT_HOST");
            std::fs::write(ctx.path().join("Dockerfile"), SCRATCH_DOCKERFILE)?;
        }
        (b, d) => {
            for (name, v) in [("BUILDKIT_HOST", b), ("DOCKER_HOST", d)] {
                if let Some(v) = v {
                    println!(
                        "demo: {name}={v} is not reachable; starting the local daemons instead"
                    );
                }
            }
            let layout = Layout::new(root);
            env::up(&layout).context("starting the local daemons (cargo xtask env up)")?;
            let vars = env::env_vars(&layout);
            let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let registry = get("BUILDKIT_RS_REGISTRY").context("env has no registry")?;
            std::fs::write(ctx.path().join("Dockerfile"), busybox_dockerfile(&registry))?;
            cmd.env(
                "BUILDKIT_HOST",
                get("BUILDKIT_HOST").context("env has no BUILDKIT_HOST")?,
            );
            println!("demo: using the local buildkitd started by env up");
        }
    }
    let status = cmd.status().context("running the build example")?;
    if !status.success() {
        bail!("the demo build failed ({status})");
    }
    Ok(())
}
