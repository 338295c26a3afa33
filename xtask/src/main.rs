//! Project automation. Run `cargo xtask help` for the commands.

mod authreg;
mod bench;
mod ci;
mod demo;
mod env;
mod proto;

use std::path::PathBuf;

use anyhow::{Result, bail};

const HELP: &str = "\
cargo xtask <command>

commands:
  demo                build an example Dockerfile through BuildKit (plain progress,
                      image digest); starts the local daemons when none is reachable
  ci                  everything CI runs: fmt, clippy, proto --check, doc, env up,
                      the whole test suite, env down
  env up|down|status  the real daemons the tests use (dockerd, registry, buildkitd)
  bench context       time cold and warm REST builds of a ~550 MB context through our
                      FileSync and through the docker CLI (report in target/bench)
  proto [--check]     regenerate buildkit-proto/src/generated (or fail if it is stale)
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("proto") => proto::run(&root, args.iter().any(|a| a == "--check")),
        Some("env") => env::run(&root, &args[1..]),
        Some("ci") => ci::run(&root),
        Some("demo") => demo::run(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}
