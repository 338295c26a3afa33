//! `cargo xtask ci`: everything CI checks, in order, with the daemons up for the
//! tests and taken down again whatever happens.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::env::{self, Layout};

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root);
    c
}

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {name}");
    let t = Instant::now();
    let status = cmd.status().with_context(|| format!("running {name}"))?;
    println!(
        "==> {name}: {} in {:.0}s",
        if status.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

pub fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    step("fmt", cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "clippy (providerless)",
        cargo(root).args([
            "clippy",
            "-p",
            "docker-api",
            "-p",
            "buildkit-session",
            "-p",
            "buildkit-driver",
            "-p",
            "buildkit-export",
            "--all-targets",
            "--locked",
            "--no-default-features",
            "--features",
            "providerless",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    println!("\n==> proto --check");
    crate::proto::run(root, true)?;
    step(
        "doc",
        cargo(root)
            .args(["doc", "--workspace", "--no-deps", "--locked"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;

    let layout = Layout::new(root);
    println!("\n==> env up");
    let result = env::up(&layout).and_then(|()| tests(root, &layout));
    println!("\n==> env down");
    let down = env::down(&layout);
    result?;
    down?;
    println!("\nci: all green in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn tests(root: &Path, layout: &Layout) -> Result<()> {
    let vars = env::env_vars(layout);
    step(
        "test",
        cargo(root)
            .args(["test", "--workspace", "--locked", "--no-fail-fast"])
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )?;
    step(
        "test (1 GiB docker load, client peak RSS)",
        cargo(root)
            .args([
                "test",
                "-p",
                "tests",
                "--test",
                "docker_load_rss",
                "--locked",
                "--",
                "--ignored",
                "--nocapture",
            ])
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )?;
    step(
        "test (providerless)",
        cargo(root)
            .args([
                "test",
                "-p",
                "docker-api",
                "-p",
                "buildkit-session",
                "-p",
                "buildkit-driver",
                "-p",
                "buildkit-export",
                "--locked",
                "--no-default-features",
                "--features",
                "providerless",
            ])
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )?;
    Ok(())
}
