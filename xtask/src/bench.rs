//! `cargo xtask bench context`: a cold and a warm (one file changed) REST build of a
//! generated ~550 MB / 20,000-file context, through our FileSync (the `rest_build`
//! example of buildkit-session) and through the Docker CLI (`DOCKER_BUILDKIT=1`),
//! in the same run against the same dockerd. Reports wall time, client CPU and
//! client peak RSS, and the ratios. Measured, never asserted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::env::{self, Layout};

/// Files in the generated context.
const FILES: usize = 20_000;
/// Directories they are spread over.
const DIRS: usize = 100;
/// Target total size.
const TOTAL_BYTES: u64 = 550 * 1000 * 1000;
/// Runs of each measurement (the median is reported).
const RUNS: usize = 3;

/// One measured client run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("context") => context(root),
        _ => bail!("usage: cargo xtask bench context"),
    }
}

/// A small deterministic generator, so the context is the same on every machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn generate(dir: &Path) -> Result<()> {
    let marker = dir.join(".generated");
    let spec = format!("{FILES} files, {TOTAL_BYTES} bytes, v1");
    if fs::read_to_string(&marker).is_ok_and(|m| m == spec) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    println!("bench: generating {spec} in {}", dir.display());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let avg = TOTAL_BYTES / FILES as u64;
    let mut buf = vec![0u8; (avg * 2) as usize];
    for i in 0..FILES {
        let sub = dir.join(format!("d{:03}", i % DIRS));
        if i < DIRS {
            fs::create_dir_all(&sub)?;
        }
        // Sizes from 1 byte to twice the average: the total lands near the target.
        let size = (rng.next() % (avg * 2)) as usize + 1;
        for chunk in buf[..size].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        fs::write(sub.join(format!("f{i:05}.bin")), &buf[..size])?;
    }
    fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:local\nRUN --mount=type=bind,target=/ctx du -s /ctx\n",
    )?;
    fs::write(&marker, spec)?;
    Ok(())
}

/// Reads every file once, so that neither client is the first to pay for the disk.
fn warm_page_cache(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                std::io::copy(&mut fs::File::open(e.path())?, &mut std::io::sink())?;
            }
        }
    }
    Ok(())
}

/// Runs `cmd`, returning wall time, its CPU time (user + system) and peak RSS.
fn measure(cmd: &mut Command) -> Result<Sample> {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the client")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be filled in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let stderr = child.stderr;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    // SAFETY: waits for our own child and fills `status` and `usage`.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the client failed:\n{err}");
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok(Sample {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn median(mut v: Vec<Sample>) -> Sample {
    let pick = |f: &dyn Fn(&Sample) -> f64, v: &mut Vec<Sample>| {
        v.sort_by(|a, b| f(a).total_cmp(&f(b)));
        f(&v[v.len() / 2])
    };
    Sample {
        wall: pick(&|s| s.wall, &mut v),
        cpu: pick(&|s| s.cpu, &mut v),
        rss_mib: pick(&|s| s.rss_mib, &mut v),
    }
}

fn docker_cli() -> Result<PathBuf> {
    // Debian's docker.io CLI (20.10) builds with BuildKit natively; newer CLIs need
    // the buildx plugin.
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        return Ok(debian);
    }
    bail!("the docker CLI of Debian's docker.io package (/usr/bin/docker) is needed as the peer")
}

/// Empties dockerd's build cache, so that the next build is cold.
fn prune(docker: &Path, host: &str) -> Result<()> {
    let st = Command::new(docker)
        .args(["builder", "prune", "-af"])
        .env("DOCKER_HOST", host)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("docker builder prune failed");
    }
    settle();
    Ok(())
}

/// Writes back dirty pages (the previous build's output), so that the next run does
/// not pay for them.
fn settle() {
    let _ = Command::new("sync").status();
}

fn context(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    env::up(&layout)?;
    let vars = env::env_vars(&layout);
    let host = vars
        .iter()
        .find(|(k, _)| k == "DOCKER_HOST")
        .map(|(_, v)| v.clone())
        .context("no DOCKER_HOST")?;
    let dir = layout.state.join("bench-context");
    generate(&dir)?;
    let docker = docker_cli()?;

    println!("bench: building the client (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "buildkit-session",
            "--example",
            "rest_build",
        ])
        .status()?;
    if !st.success() {
        bail!("building the rest_build example failed");
    }
    let ours_bin = root.join("target/release/examples/rest_build");

    let ours = |key: &str| -> Command {
        let mut c = Command::new(&ours_bin);
        c.arg("--dir")
            .arg(&dir)
            .args([
                "--tag",
                "bench-context:ours",
                "--network",
                "host",
                "--shared-key",
                key,
            ])
            .env("DOCKER_HOST", &host);
        c
    };
    let theirs = || -> Command {
        let mut c = Command::new(&docker);
        c.args([
            "build",
            "-q",
            "--network",
            "host",
            "-t",
            "bench-context:cli",
        ])
        .arg(&dir)
        .env("DOCKER_HOST", &host)
        .env("DOCKER_BUILDKIT", "1");
        c
    };
    warm_page_cache(&dir)?;
    let changed = dir.join("d007/f00007.bin");
    let original = fs::read(&changed)?;

    // The clients take turns, so that drift on the machine hits both alike.
    let clients = ["ours", "docker CLI"];
    let mut samples: Vec<(&str, &str, Sample)> = Vec::new();
    for run in 0..RUNS {
        for client in clients {
            let cmd = |client: &str| {
                if client == "ours" {
                    ours("bench-ours")
                } else {
                    theirs()
                }
            };
            prune(&docker, &host)?;
            let s = measure(&mut cmd(client))?;
            println!(
                "bench: {client} cold #{run}: {:.2}s wall, {:.2}s CPU, {:.1} MiB",
                s.wall, s.cpu, s.rss_mib
            );
            samples.push((client, "cold", s));
            // Warm: the same context with one file changed.
            let mut content = original.clone();
            content.extend_from_slice(format!("changed {run}").as_bytes());
            fs::write(&changed, &content)?;
            settle();
            let s = measure(&mut cmd(client))?;
            println!(
                "bench: {client} warm #{run}: {:.2}s wall, {:.2}s CPU, {:.1} MiB",
                s.wall, s.cpu, s.rss_mib
            );
            samples.push((client, "warm", s));
            fs::write(&changed, &original)?;
        }
    }
    let mut results: Vec<(&str, &str, Sample)> = Vec::new();
    for client in clients {
        for kind in ["cold", "warm"] {
            let v: Vec<Sample> = samples
                .iter()
                .filter(|s| s.0 == client && s.1 == kind)
                .map(|s| s.2)
                .collect();
            results.push((client, kind, median(v)));
        }
    }

    let get = |c: &str, k: &str| {
        results
            .iter()
            .find(|r| r.0 == c && r.1 == k)
            .map(|r| r.2)
            .expect("measured")
    };
    let mut report = String::new();
    report.push_str(&format!(
        "context: {FILES} files, {:.0} MB; median of {RUNS} runs\n\n",
        TOTAL_BYTES as f64 / 1e6
    ));
    report.push_str(
        "| build | client | wall s | client CPU s | peak RSS MiB |\n|---|---|---|---|---|\n",
    );
    for (c, k, s) in &results {
        report.push_str(&format!(
            "| {k} | {c} | {:.2} | {:.2} | {:.1} |\n",
            s.wall, s.cpu, s.rss_mib
        ));
    }
    report.push('\n');
    for k in ["cold", "warm"] {
        let (o, t) = (get("ours", k), get("docker CLI", k));
        report.push_str(&format!(
            "{k}: wall {:.2}x, client CPU {:.2}x, peak RSS {:.2}x the docker CLI\n",
            o.wall / t.wall,
            o.cpu / t.cpu,
            o.rss_mib / t.rss_mib
        ));
    }
    println!("\n{report}");
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    fs::File::create(out_dir.join("context.md"))?.write_all(report.as_bytes())?;
    println!("bench: report written to target/bench/context.md");
    Ok(())
}
