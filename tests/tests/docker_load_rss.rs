//! `docker load` of a 1 GiB generated tar keeps the client's memory flat: the
//! `load_generated` example streams the archive as it generates it, and its peak
//! RSS must stay under 64 MiB. Ignored by default (it moves 1 GiB and builds the
//! example in release mode); run it with
//!
//! ```text
//! cargo xtask env up   # if the daemons are not running yet
//! cargo test -p tests --test docker_load_rss -- --ignored --nocapture
//! ```
//!
//! `DOCKER_API_RSS_MIB` changes the size (default 1024).

use std::path::Path;
use std::process::Command;

use docker_api::images::RemoveImageOptions;
use tests::{Cleanup, Leftover, TestEnv, unique_name};

const LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test]
#[ignore = "streams 1 GiB through dockerd and builds an example in release mode"]
async fn loading_a_1_gib_generated_tar_keeps_peak_rss_under_64_mib() {
    let env = TestEnv::get();
    let size_mib: u64 = std::env::var("DOCKER_API_RSS_MIB")
        .ok()
        .map(|v| v.parse().expect("DOCKER_API_RSS_MIB is a number"))
        .unwrap_or(1024);
    let tag = format!("{}:latest", unique_name("docker-api-load-rss"));
    let _image = Cleanup::new(&env, Leftover::Image(tag.clone()));

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "docker-api",
            "--release",
        ])
        .args(["--example", "load_generated", "--"])
        .args(["--size-mib", &size_mib.to_string(), "--tag", &tag])
        .env("DOCKER_HOST", &env.docker_host)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_API_VERSION")
        .output()
        .expect("running cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "example failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    assert!(stdout.contains(&format!("Loaded image: {tag}")), "{stdout}");
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM_KIB="))
        .expect("the example prints VmHWM_KIB=")
        .trim()
        .parse()
        .unwrap();
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {peak} KiB while loading {size_mib} MiB (limit {LIMIT_KIB} KiB)"
    );

    let docker = env.docker();
    let image = docker.images().inspect(&tag).await.unwrap();
    assert_eq!(image.root_fs.unwrap().layers.len(), 1);
    assert!(
        image.size.unwrap() >= (size_mib * 1024 * 1024) as i64,
        "{:?}",
        image.size
    );
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
}
