//! Shared helpers for the integration tests: where the real daemons are.
//!
//! The daemons come from `cargo xtask env up`, which writes their addresses to the
//! env file in its state directory; `cargo xtask ci` also passes them as environment
//! variables. A test run without them fails and says how to start them.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
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
    /// The locally made buildkit image for the docker-container driver.
    pub buildkit_image: String,
    /// The TLS + htpasswd registry (`ip:port`), trusted by dockerd and buildkitd.
    pub auth_registry: String,
    /// Its user.
    pub auth_user: String,
    /// Its password.
    pub auth_password: String,
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
            buildkit_image: var("BUILDKIT_RS_BUILDKIT_IMAGE"),
            auth_registry: var("BUILDKIT_RS_AUTH_REGISTRY"),
            auth_user: var("BUILDKIT_RS_AUTH_USER"),
            auth_password: var("BUILDKIT_RS_AUTH_PASSWORD"),
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

/// A name no other test run uses: `prefix-<pid>-<counter>-<nanos>`, lowercase so it
/// is a valid image repository, container and volume name.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A ustar archive of regular files held in memory, for small build contexts.
pub fn tar_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        assert!(name.len() < 100, "tar_archive takes short names only");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// What a [`Cleanup`] removes.
#[derive(Debug, Clone)]
pub enum Leftover {
    /// A container (force-removed with its anonymous volumes).
    Container(String),
    /// An image reference or id (force-removed).
    Image(String),
    /// A volume.
    Volume(String),
}

/// Removes a daemon object when dropped, so a failed assertion leaves nothing behind.
///
/// The removal runs on a fresh client in its own thread and runtime: the test's
/// runtime may be the one blocked in this `drop`.
#[derive(Debug)]
pub struct Cleanup {
    docker_host: String,
    what: Leftover,
}

impl Cleanup {
    /// Removes `what` from the test dockerd when dropped.
    pub fn new(env: &TestEnv, what: Leftover) -> Self {
        Self {
            docker_host: env.docker_host.clone(),
            what,
        }
    }

    /// The id or name being guarded.
    pub fn id(&self) -> &str {
        match &self.what {
            Leftover::Container(s) | Leftover::Image(s) | Leftover::Volume(s) => s,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let host = self.docker_host.clone();
        let what = self.what.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let Ok(docker) = docker_api::Docker::connect(&host) else {
                    return;
                };
                match what {
                    Leftover::Container(id) => {
                        let opts = docker_api::containers::RemoveContainerOptions::new()
                            .force(true)
                            .volumes(true);
                        let _ = docker.containers().remove(&id, &opts).await;
                    }
                    Leftover::Image(name) => {
                        let opts = docker_api::images::RemoveImageOptions::new().force(true);
                        let _ = docker.images().remove(&name, &opts).await;
                    }
                    Leftover::Volume(name) => {
                        let _ = docker.volumes().remove(&name, true).await;
                    }
                }
            })
        })
        .join();
    }
}

/// The outcome of a REST `/build`.
#[derive(Debug, Default)]
pub struct RestBuild {
    /// The image id from the `moby.image.id` aux message.
    pub image_id: Option<String>,
    /// Every progress message as received.
    pub messages: Vec<docker_api::ProgressMessage>,
}

/// A REST `/build` with `options` and `context` as the body, followed to its end. A
/// build error becomes `Err` with the daemon's message.
pub async fn rest_build(
    docker: &docker_api::Docker,
    options: &docker_api::BuildOptions,
    context: docker_api::Body,
) -> Result<RestBuild, String> {
    use futures_util::StreamExt;
    let mut stream = docker
        .images()
        .build(options, context)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = RestBuild::default();
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|e| {
            e.message()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string())
        })?;
        if msg.id.as_deref() == Some("moby.image.id") {
            out.image_id = msg.aux_as::<docker_api::images::BuildAux>().map(|a| a.id);
        }
        out.messages.push(msg);
    }
    Ok(out)
}

/// Runs `image` (with `cmd` if not empty) with no network, waits, and returns its exit
/// code and its output (stdout and stderr in order), then removes the container.
pub async fn run_image(docker: &docker_api::Docker, image: &str, cmd: &[&str]) -> (i64, String) {
    use docker_api::containers::{LogsOptions, RemoveContainerOptions, WaitCondition};
    use futures_util::StreamExt;
    let mut config = docker_api::ContainerConfig::new(image).network_mode("none");
    if !cmd.is_empty() {
        config = config.cmd(cmd.iter().copied());
    }
    let created = docker
        .containers()
        .create(&config)
        .await
        .expect("creating a container");
    docker
        .containers()
        .start(&created.id)
        .await
        .expect("starting the container");
    let exit = docker
        .containers()
        .wait(&created.id, WaitCondition::NotRunning)
        .await
        .expect("waiting for the container");
    let mut logs = docker
        .containers()
        .logs(&created.id, &LogsOptions::new())
        .await
        .expect("reading logs");
    let mut out = Vec::new();
    while let Some(piece) = logs.next().await {
        out.extend_from_slice(&piece.expect("log stream").data);
    }
    let _ = docker
        .containers()
        .remove(&created.id, &RemoveContainerOptions::new().force(true))
        .await;
    (exit.status_code, String::from_utf8_lossy(&out).into_owned())
}

/// Removes an image, ignoring errors (cleanup).
pub async fn remove_image(docker: &docker_api::Docker, image: &str) {
    let opts = docker_api::images::RemoveImageOptions::new().force(true);
    let _ = docker.images().remove(image, &opts).await;
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

/// A CA that signs server and client certificates.
pub struct Ca {
    /// The CA certificate (PEM).
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` (the `DOCKER_CERT_PATH` layout).
    pub fn issue(&self, dir: &Path, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            sans.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), &self.pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory with a short path: unix socket paths are limited to about
/// 108 bytes.
pub fn short_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("dapi").tempdir().unwrap();
    if dir.path().as_os_str().len() < 60 {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("dapi")
        .tempdir_in("/tmp")
        .unwrap()
}

/// A second buildkitd that listens on 127.0.0.1 over TCP with mutual TLS, with its own
/// CA, server and client certificates made here. Started once per test process; it
/// gets SIGTERM when the process exits.
#[derive(Debug)]
pub struct MtlsBuildkitd {
    /// `tcp://127.0.0.1:<port>`.
    pub address: String,
    /// The directory with the client's `ca.pem`, `cert.pem` and `key.pem`.
    pub client_dir: PathBuf,
    /// A directory with a client certificate from a different CA.
    pub stranger_dir: PathBuf,
}

impl MtlsBuildkitd {
    /// The daemon, started on first use.
    pub fn get(env: &TestEnv) -> &'static Self {
        use std::os::unix::process::CommandExt;
        use std::sync::OnceLock;
        static DAEMON: OnceLock<MtlsBuildkitd> = OnceLock::new();
        DAEMON.get_or_init(|| {
            // Leftovers of earlier test processes (their daemons died with them).
            if let Ok(entries) = std::fs::read_dir("/tmp") {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name.strip_prefix("bk-mtls-")
                        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            let dir = std::path::PathBuf::from(format!("/tmp/bk-mtls-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca = Ca::new("buildkit-rs test CA");
            ca.issue(
                &dir.join("server"),
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            ca.issue(
                &dir.join("client"),
                &["client"],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
            Ca::new("someone else").issue(
                &dir.join("stranger"),
                &["client"],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
            let port = free_port();
            let log = std::fs::File::create(dir.join("buildkitd.log")).unwrap();
            let mut cmd = std::process::Command::new(env.bin_dir.join("buildkitd"));
            cmd.arg("--root")
                .arg(dir.join("root"))
                .arg("--addr")
                .arg(format!("tcp://127.0.0.1:{port}"))
                .arg("--tlscacert")
                .arg(dir.join("server/ca.pem"))
                .arg("--tlscert")
                .arg(dir.join("server/cert.pem"))
                .arg("--tlskey")
                .arg(dir.join("server/key.pem"))
                .arg("--config")
                .arg(env.state.join("buildkitd.toml"))
                .args([
                    "--oci-worker-net=host",
                    "--allow-insecure-entitlement",
                    "network.host",
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let (tx, rx) = std::sync::mpsc::channel();
            // The death signal follows the thread that forked: keep that thread alive
            // for the life of the process.
            std::thread::spawn(move || {
                let child = cmd.spawn();
                let ok = child.is_ok();
                tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()))
                    .unwrap();
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            });
            rx.recv().unwrap().expect("starting the mTLS buildkitd");
            let t = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(60),
                    "the mTLS buildkitd did not listen; its log:\n{}",
                    std::fs::read_to_string(dir.join("buildkitd.log")).unwrap_or_default()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            MtlsBuildkitd {
                address: format!("tcp://127.0.0.1:{port}"),
                client_dir: dir.join("client"),
                stranger_dir: dir.join("stranger"),
            }
        })
    }
}

/// A build context in a new temporary directory: `(path, content)` pairs.
pub fn context_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    d
}

/// Solves `build` on `driver`, collecting every progress event.
pub async fn solve_with_events(
    driver: &dyn buildkit_driver::Driver,
    build: buildkit_driver::Build,
) -> (
    buildkit_driver::Result<buildkit_driver::Solved>,
    Vec<buildkit_driver::progress::Event>,
) {
    use futures_util::StreamExt;
    let mut handle = match driver.solve(build).await {
        Ok(h) => h,
        Err(e) => return (Err(e), Vec::new()),
    };
    let events = tokio::spawn(handle.progress().collect::<Vec<_>>());
    let res = handle.await;
    (res, events.await.unwrap())
}

/// The states reported for the vertexes whose name contains `needle`.
pub fn vertex_states(
    events: &[buildkit_driver::progress::Event],
    needle: &str,
) -> Vec<buildkit_driver::progress::VertexState> {
    events
        .iter()
        .filter_map(|e| match e {
            buildkit_driver::progress::Event::Vertex(v) if v.name.contains(needle) => {
                Some(v.state.clone())
            }
            _ => None,
        })
        .collect()
}

/// Whether a vertex whose name contains `needle` was taken from the cache.
pub fn vertex_cached(events: &[buildkit_driver::progress::Event], needle: &str) -> bool {
    vertex_states(events, needle)
        .iter()
        .any(|s| matches!(s, buildkit_driver::progress::VertexState::Cached))
}

/// A registry of its own (`docker-registry`) on 127.0.0.1 that requires basic auth
/// for one user (an `auth: htpasswd:` section); stopped when dropped.
pub struct AuthRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The user it accepts.
    pub user: String,
    /// That user's password.
    pub password: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    /// Starts one with a fresh storage directory and waits until it listens.
    pub fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             auth:\n  htpasswd:\n    realm: buildkit-rs-test\n    path: {htpasswd}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "the htpasswd registry did not listen; its log:\n{}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            host: format!("127.0.0.1:{port}"),
            user: user.to_string(),
            password: password.to_string(),
            child,
            _dir: dir,
        }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
