//! Shared helpers for the integration tests: where the real daemons are.
//!
//! The daemons come from `cargo xtask env up`, which writes their addresses to the
//! env file in its state directory; `cargo xtask ci` also passes them as environment
//! variables. A test run without them fails and says how to start them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Addresses of the test daemons.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// dockerd (`unix://...`).
    pub docker_host: String,
    /// Standalone buildkitd (`unix://...`).
    pub buildkit_host: String,
    /// The local registry as used in image names (`localhost:5000`).
    pub registry: String,
    /// The state directory of `cargo xtask env`.
    pub state: PathBuf,
    /// Where buildkitd and buildctl were built.
    pub bin_dir: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

impl TestEnv {
    /// Reads the environment (variables first, then the env file).
    ///
    /// # Panics
    /// When the test environment is not up.
    pub fn get() -> Self {
        let state = std::env::var_os("BUILDKIT_RS_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".state"));
        let file: BTreeMap<String, String> = std::fs::read_to_string(state.join("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var =
            |k: &str| {
                std::env::var(k).ok().or_else(|| file.get(k).cloned()).unwrap_or_else(|| {
                panic!(
                    "{k} is not set and {} has no value for it: the test daemons are not up; \
                     run `cargo xtask env up` (or the whole suite with `cargo xtask ci`)",
                    state.join("env").display()
                )
            })
            };
        Self {
            docker_host: var("DOCKER_HOST"),
            buildkit_host: var("BUILDKIT_HOST"),
            registry: var("BUILDKIT_RS_REGISTRY"),
            state: PathBuf::from(var("BUILDKIT_RS_STATE")),
            bin_dir: PathBuf::from(var("BUILDKIT_RS_BIN_DIR")),
        }
    }

    /// A Docker client for the test dockerd.
    pub fn docker(&self) -> docker_api::Docker {
        docker_api::Docker::connect(&self.docker_host).expect("DOCKER_HOST parses")
    }

    /// buildkitd's socket path.
    pub fn buildkit_socket(&self) -> PathBuf {
        PathBuf::from(
            self.buildkit_host
                .strip_prefix("unix://")
                .expect("BUILDKIT_HOST is a unix:// address"),
        )
    }
}
