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

/// A name unique to this test process and call, for tags, containers and dirs.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The outcome of a REST `/build`.
#[derive(Debug, Default)]
pub struct RestBuild {
    /// The image id from the `moby.image.id` aux message.
    pub image_id: Option<String>,
    /// Every progress message as received.
    pub messages: Vec<serde_json::Value>,
}

/// `POST /build?<query>` with `body`, following the progress stream to its end.
/// A build error becomes `Err` with the daemon's message.
pub async fn rest_build(
    docker: &docker_api::Docker,
    query: &str,
    body: docker_api::Body,
) -> Result<RestBuild, String> {
    use docker_api::http::{HeaderMap, HeaderValue, Method, header::CONTENT_TYPE};
    use futures_util::StreamExt;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    let resp = docker
        .request_unbounded(Method::POST, &format!("/build?{query}"), headers, body)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = docker.json_stream::<serde_json::Value>(resp);
    let mut out = RestBuild::default();
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        if let Some(err) = msg.get("error").and_then(|e| e.as_str()) {
            return Err(err.to_string());
        }
        if msg.get("id").and_then(|v| v.as_str()) == Some("moby.image.id") {
            out.image_id = msg["aux"]["ID"].as_str().map(str::to_string);
        }
        out.messages.push(msg);
    }
    Ok(out)
}

/// Runs `image` (with `cmd` if not empty) with no network, waits, and returns its exit
/// code and its output (stdout and stderr interleaved), then removes the container.
pub async fn run_image(docker: &docker_api::Docker, image: &str, cmd: &[&str]) -> (i64, String) {
    use docker_api::Body;
    use docker_api::http::{HeaderMap, Method};
    let mut config = serde_json::json!({"Image": image, "HostConfig": {"NetworkMode": "none"}});
    if !cmd.is_empty() {
        config["Cmd"] = serde_json::json!(cmd);
    }
    let created: serde_json::Value = docker
        .json(
            Method::POST,
            "/containers/create",
            Some(Body::json(&config).unwrap()),
        )
        .await
        .expect("creating a container");
    let id = created["Id"].as_str().expect("container id").to_string();
    docker
        .call(Method::POST, &format!("/containers/{id}/start"), None)
        .await
        .expect("starting the container");
    let waited: serde_json::Value = docker
        .json(Method::POST, &format!("/containers/{id}/wait"), None)
        .await
        .expect("waiting for the container");
    let resp = docker
        .request(
            Method::GET,
            &format!("/containers/{id}/logs?stdout=1&stderr=1"),
            HeaderMap::new(),
            Body::empty(),
        )
        .await
        .expect("reading logs");
    use http_body_util::BodyExt;
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    // Docker's multiplexed log frames: 8-byte header (stream, 0, 0, 0, size BE u32).
    let mut out = Vec::new();
    let mut rest = &raw[..];
    while rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + size).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    let _ = docker
        .call(Method::DELETE, &format!("/containers/{id}?force=1"), None)
        .await;
    (
        waited["StatusCode"].as_i64().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// Removes an image, ignoring errors (cleanup).
pub async fn remove_image(docker: &docker_api::Docker, image: &str) {
    let _ = docker
        .call(
            docker_api::http::Method::DELETE,
            &format!("/images/{image}?force=1"),
            None,
        )
        .await;
}

/// Copies `binary` and the shared libraries `ldd` lists for it into `root`, laid out
/// as a root filesystem (to run host tools inside busybox-based images).
///
/// A directory holding `binary` and the shared libraries `ldd` lists for it, laid out
/// as a root filesystem.
pub fn rootfs_with(binary: &str, root: &Path) {
    let copy = |src: &Path| {
        let dest = root.join(src.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(src, &dest).unwrap();
    };
    copy(Path::new(binary));
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(|p| p.trim_end_matches(':'));
        if let Some(p) = path {
            copy(&std::fs::canonicalize(p).unwrap());
            // Keep the name the binary asks for, too (a symlink target is copied above).
            let asked = Path::new(p);
            let dest = root.join(asked.strip_prefix("/").unwrap());
            if !dest.exists() {
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(asked, &dest).unwrap();
            }
        }
    }
}

/// An ssh-agent holding a fresh ed25519 key; killed on drop.
pub struct Agent {
    child: std::process::Child,
    /// The agent's socket.
    pub socket: std::path::PathBuf,
    /// The key's public part, as `ssh-keygen` wrote it.
    pub public_key: String,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `ssh-agent -D` on a fresh socket and adds a new ed25519 key.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agent")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is installed by env up");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let key = dir.path().join("id_ed25519");
        let st = std::process::Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "buildkit-rs-test",
                "-f",
            ])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let st = std::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        Self {
            child,
            socket,
            public_key,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

