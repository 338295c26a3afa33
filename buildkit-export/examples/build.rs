//! Builds a Dockerfile through BuildKit with plain progress and prints the image
//! digest: what `cargo xtask demo` runs.
//!
//! ```text
//! cargo run -p buildkit-export --example build -- [--dir DIR] [--tag TAG] [--progress plain|tty|rawjson]
//! ```
//!
//! With `BUILDKIT_HOST` set it talks to that buildkitd; otherwise to the Docker Engine
//! at `DOCKER_HOST` (default `/var/run/docker.sock`) and its embedded BuildKit.

use std::path::PathBuf;

use buildkit_driver::progress::{Plain, RawJson, Tty};
use buildkit_driver::{Build, Driver, Moby, Network, Remote};
use buildkit_export::{Image, Moby as MobyImage};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = PathBuf::from(".");
    let mut tag = String::from("buildkit-rs-demo:latest");
    let mut progress = String::from("plain");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().ok_or("--dir needs a value")?.into(),
            "--tag" => tag = args.next().ok_or("--tag needs a value")?,
            "--progress" => progress = args.next().ok_or("--progress needs a value")?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    let remote = std::env::var("BUILDKIT_HOST")
        .ok()
        .filter(|v| !v.is_empty());
    let (driver, build): (Box<dyn Driver>, Build) = match remote {
        Some(addr) => {
            eprintln!("building {} on buildkitd at {addr}", dir.display());
            let build = Build::dockerfile(&dir).output(Image::new().name(&tag));
            (Box::new(Remote::new(&addr)?), build)
        }
        None => {
            let docker = docker_api::Docker::from_env()?;
            eprintln!(
                "building {} on the Docker Engine at {}",
                dir.display(),
                docker.endpoint()
            );
            let build = Build::dockerfile(&dir).output(MobyImage::named(&tag));
            (Box::new(Moby::new(docker)), build)
        }
    };
    // RUN steps get no network: nothing in the demo needs one.
    let build = build.network(Network::None);

    let mut handle = driver.solve(build).await?;
    let events = handle.progress();
    let printer = tokio::spawn(async move {
        match progress.as_str() {
            "tty" => Tty::new(std::io::stderr()).print(events).await.map(drop),
            "rawjson" => RawJson::new(std::io::stderr())
                .print(events)
                .await
                .map(drop),
            _ => Plain::new(std::io::stderr()).print(events).await.map(drop),
        }
    });
    let result = handle.await;
    printer.await??;
    let solved = result?;
    println!("image: {tag}");
    println!("digest: {}", solved.digest().unwrap_or("(none reported)"));
    Ok(())
}
