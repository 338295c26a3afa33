//! The lightweight path: a BuildKit build through the Docker Engine's REST `/build`,
//! the context sent by FileSync over a session on the same socket.
//!
//! ```text
//! cargo run -p buildkit-session --example rest_build -- --dir DIR [--tag TAG] [--network host|none] [--shared-key KEY]
//! ```
//!
//! Prints the image id. `DOCKER_HOST` chooses the daemon.

use std::path::PathBuf;

use buildkit_session::{FileSync, Session, shared_key_for};
use docker_api::images::BuilderVersion;
use docker_api::{Body, BuildOptions, Docker};
use futures_util::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = PathBuf::from(".");
    let mut tag = String::from("rest-build-example:latest");
    let mut network = String::from("host");
    let mut shared_key = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => dir = value()?.into(),
            "--tag" => tag = value()?,
            "--network" => network = value()?,
            "--shared-key" => shared_key = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let docker = Docker::from_env()?;
    let files = FileSync::new().dir("context", &dir).dir("dockerfile", &dir);
    let stats = files.stats();
    let session = Session::new()
        .with_shared_key(shared_key.unwrap_or_else(|| shared_key_for(&dir)))
        .attach(files);
    let id = session.id().to_string();
    let handle = session.run_on_docker(&docker).await?;

    let options = BuildOptions::new()
        .version(BuilderVersion::BuildKit)
        .session(&id)
        .remote("client-session")
        .dockerfile("Dockerfile")
        .tag(&tag)
        .network_mode(&network);
    let mut progress = docker.images().build(&options, Body::empty()).await?;
    let mut image = None;
    while let Some(msg) = progress.next().await {
        let msg = msg?;
        if msg.id.as_deref() == Some("moby.image.id") {
            image = msg.aux_as::<docker_api::images::BuildAux>().map(|a| a.id);
        }
    }
    handle.close().await?;
    eprintln!(
        "sent {} files, {} bytes of file data ({} entries listed)",
        stats.files(),
        stats.bytes(),
        stats.entries()
    );
    println!("{}", image.unwrap_or_default());
    Ok(())
}
