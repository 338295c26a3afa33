//! `cargo xtask env up|down|status`: the real daemons the tests talk to.
//!
//! `up` installs what is missing (Debian packages; buildkitd and buildctl built from
//! the Go module proxy and cached outside the repository), starts dockerd, a registry
//! on 127.0.0.1:5000 and buildkitd under the state directory, imports `busybox:local`,
//! pushes it to the registry, and writes `env` in the state directory for the tests.
//! `down` stops exactly the processes `up` started, by their pid files.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::authreg;

/// The BuildKit release the tests run against (and the protos follow).
pub const BUILDKIT_VERSION: &str = "v0.34.2";

/// The registry every test pushes to and pulls from.
pub const REGISTRY_ADDR: &str = "127.0.0.1:5000";

/// The name tests use for that registry in image references.
pub const REGISTRY_NAME: &str = "localhost:5000";

/// A buildkit image made locally from the built binaries, for the docker-container
/// driver (nothing is pulled).
pub const BUILDKIT_IMAGE: &str = "buildkit-rs/buildkit:local";

/// Debian packages the environment needs, with a command each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("docker.io", "dockerd"),
    ("docker-registry", "docker-registry"),
    ("busybox-static", "busybox"),
    ("runc", "runc"),
    ("apache2-utils", "htpasswd"),
    ("openssh-client", "ssh-agent"),
    ("iproute2", "ip"),
];

/// Where everything lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state directory: sockets, logs, pid files, daemon data.
    pub state: PathBuf,
    /// Where the built buildkitd and buildctl are kept.
    pub bin_dir: PathBuf,
}

impl Layout {
    /// The layout for a checkout: state in `.state/` (or `BUILDKIT_RS_STATE`), binaries
    /// in the user's cache directory.
    pub fn new(root: &Path) -> Self {
        let state = std::env::var_os("BUILDKIT_RS_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".state"));
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"));
        let bin_dir = cache
            .join("buildkit-rs")
            .join(format!("buildkit-{BUILDKIT_VERSION}"))
            .join("bin");
        Self { state, bin_dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// dockerd's API socket.
    pub fn docker_sock(&self) -> PathBuf {
        self.p("docker.sock")
    }

    /// buildkitd's gRPC socket.
    pub fn buildkit_sock(&self) -> PathBuf {
        self.p("buildkitd.sock")
    }

    /// The env file the tests read.
    pub fn env_file(&self) -> PathBuf {
        self.p("env")
    }
}

/// How long each daemon gets to become ready.
fn ready_timeout() -> Duration {
    std::env::var("BUILDKIT_RS_ENV_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(90))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let layout = Layout::new(root);
    match args.first().map(String::as_str) {
        Some("up") => up(&layout),
        Some("down") => down(&layout),
        Some("status") => status(&layout),
        _ => bail!("usage: cargo xtask env up|down|status"),
    }
}

/// Brings everything up; idempotent.
pub fn up(layout: &Layout) -> Result<()> {
    let started = Instant::now();
    ensure_packages()?;
    let (buildkitd, _) = ensure_buildkit(&layout.bin_dir)?;
    fs::create_dir_all(&layout.state)
        .with_context(|| format!("creating {}", layout.state.display()))?;

    // The authenticated registry's CA must be in place before the daemons start.
    let auth = authreg::Files::new(&layout.state);
    authreg::prepare_certs(&auth)?;
    start_dockerd(layout)?;
    start_registry(layout)?;
    start_buildkitd(layout, &buildkitd, &auth)?;
    ensure_base_image(layout)?;
    start_auth_registry(layout, &auth)?;
    ensure_buildkit_image(layout, &buildkitd)?;
    write_env_file(layout)?;
    println!(
        "env: up in {:.1}s; variables in {}",
        started.elapsed().as_secs_f64(),
        layout.env_file().display()
    );
    Ok(())
}

/// Stops what `up` started, newest first.
pub fn down(layout: &Layout) -> Result<()> {
    for name in ["buildkitd", "auth-registry", "registry", "dockerd"] {
        stop_service(layout, name)?;
    }
    authreg::netns_down();
    authreg::unprepare();
    let _ = fs::remove_dir_all(authreg::Files::new(&layout.state).dir);
    let _ = fs::remove_file(layout.env_file());
    Ok(())
}

fn status(layout: &Layout) -> Result<()> {
    for name in ["dockerd", "registry", "auth-registry", "buildkitd"] {
        match read_pid(&layout.p(&format!("{name}.pid"))) {
            Some(pid) if alive(pid) => println!("{name}: running (pid {pid})"),
            Some(pid) => println!("{name}: not running (stale pid {pid})"),
            None => println!("{name}: not started"),
        }
    }
    if layout.env_file().exists() {
        print!("{}", fs::read_to_string(layout.env_file())?);
    }
    Ok(())
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| which(cmd).is_none())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("env: installing {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing packages {}: run as root, or `sudo apt-get install -y {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    run_cmd(
        Command::new("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<String> {
    run_cmd_with_stdin(cmd.stdin(Stdio::null()), what)
}

/// Like [`run_cmd`], keeping the stdin the caller set up.
fn run_cmd_with_stdin(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds buildkitd and buildctl from the Go module proxy unless cached; returns
/// their paths.
pub fn ensure_buildkit(bin_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let buildkitd = bin_dir.join("buildkitd");
    let buildctl = bin_dir.join("buildctl");
    if buildkitd.is_file() && buildctl.is_file() {
        return Ok((buildkitd, buildctl));
    }
    let go = which("go")
        .context("Go is needed once to build buildkitd (the `go` command is not on PATH)")?;
    // A wrapper module: buildkit's go.mod has exclude directives, which `go install
    // module@version` refuses; requiring it from our own module is the supported way.
    let src = bin_dir.parent().unwrap().join("src");
    fs::create_dir_all(&src)?;
    fs::write(
        src.join("go.mod"),
        "module buildkit-rs-test-tools\n\ngo 1.26\n\n\
         exclude (\n\tgithub.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc\n\t\
         github.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2\n)\n",
    )?;
    let _ = fs::remove_file(src.join("go.sum"));
    println!(
        "env: building buildkitd and buildctl {BUILDKIT_VERSION} from the Go module proxy (once; cached in {})",
        bin_dir.display()
    );
    let t = Instant::now();
    run_cmd(
        Command::new(&go)
            .current_dir(&src)
            .args(["get"])
            .arg(format!(
                "github.com/moby/buildkit/cmd/buildkitd@{BUILDKIT_VERSION}"
            ))
            .arg(format!(
                "github.com/moby/buildkit/cmd/buildctl@{BUILDKIT_VERSION}"
            )),
        "go get github.com/moby/buildkit",
    )?;
    let tmp_bin = bin_dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp_bin);
    run_cmd(
        Command::new(&go)
            .current_dir(&src)
            .env("CGO_ENABLED", "0")
            .env("GOBIN", &tmp_bin)
            .args([
                "install",
                "-trimpath",
                &format!("-ldflags=-X github.com/moby/buildkit/version.Version={BUILDKIT_VERSION}"),
                "github.com/moby/buildkit/cmd/buildkitd",
                "github.com/moby/buildkit/cmd/buildctl",
            ]),
        "go install buildkitd buildctl",
    )?;
    let _ = fs::remove_dir_all(bin_dir);
    fs::rename(&tmp_bin, bin_dir)?;
    println!(
        "env: built buildkit {BUILDKIT_VERSION} in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok((buildkitd, buildctl))
}

// ---------------------------------------------------------------------------------
// Services

/// A daemon process started in the background with a pid file and a log file.
pub struct Service<'a> {
    /// Short name: pid file `<name>.pid`, log `<name>.log`.
    pub name: &'a str,
    /// The command line.
    pub command: Command,
    /// Readiness probe; `Ok(true)` once ready.
    pub ready: Box<dyn Fn() -> bool + 'a>,
    /// How long to wait for readiness.
    pub timeout: Duration,
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie counts as gone.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

fn kill(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `svc` unless its pid file names a live, ready process; waits for readiness.
/// On timeout or early exit the process is stopped and the error carries the last
/// lines of its log.
pub fn start_service(state: &Path, mut svc: Service<'_>) -> Result<()> {
    let pid_file = state.join(format!("{}.pid", svc.name));
    let log_file = state.join(format!("{}.log", svc.name));
    if let Some(pid) = read_pid(&pid_file) {
        if alive(pid) {
            if (svc.ready)() {
                println!("env: {} already running (pid {pid})", svc.name);
                return Ok(());
            }
            // Running but not answering: wait for it like a fresh start.
            return wait_ready(&svc, pid, &log_file, &pid_file);
        }
        let _ = fs::remove_file(&pid_file);
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let child = svc
        .command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: a Ctrl-C on xtask does not take the daemon down.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", svc.name))?;
    let pid = child.id() as i32;
    fs::write(&pid_file, pid.to_string())?;
    // The child is reaped by init once xtask exits; drop the handle.
    drop(child);
    wait_ready(&svc, pid, &log_file, &pid_file)
}

fn wait_ready(svc: &Service<'_>, pid: i32, log_file: &Path, pid_file: &Path) -> Result<()> {
    let t = Instant::now();
    loop {
        if (svc.ready)() {
            println!(
                "env: {} ready (pid {pid}, {:.1}s)",
                svc.name,
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let exited = !alive(pid);
        if exited || t.elapsed() > svc.timeout {
            if !exited {
                kill(pid, "-TERM");
                std::thread::sleep(Duration::from_millis(500));
                kill(pid, "-KILL");
            }
            let _ = fs::remove_file(pid_file);
            let why = if exited {
                "exited before it was ready".to_string()
            } else {
                format!("was not ready within {}s", svc.timeout.as_secs())
            };
            bail!(
                "{} {why}; last lines of {}:\n{}",
                svc.name,
                log_file.display(),
                tail(log_file, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_service(layout: &Layout, name: &str) -> Result<()> {
    let pid_file = layout.p(&format!("{name}.pid"));
    let Some(pid) = read_pid(&pid_file) else {
        return Ok(());
    };
    if alive(pid) {
        kill(pid, "-TERM");
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            kill(pid, "-KILL");
        }
        println!("env: stopped {name} (pid {pid})");
    }
    let _ = fs::remove_file(&pid_file);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Probes: a minimal HTTP/1.0 GET over a unix socket or TCP, so readiness needs nothing
// that is being tested.

/// Status code and body of `GET path`.
fn http_get_unix(sock: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    http_get(&mut s, path)
}

fn http_get_tcp(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    http_get(&mut s, path)
}

fn http_get<S: Read + Write>(s: &mut S, path: &str) -> Option<(u16, String)> {
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn start_dockerd(layout: &Layout) -> Result<()> {
    let st = &layout.state;
    let sock = layout.docker_sock();
    let mut cmd = Command::new(which("dockerd").context("dockerd not found")?);
    cmd.args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
        .args(["--storage-driver=overlay2"])
        .arg("--data-root")
        .arg(st.join("docker"))
        .arg("--exec-root")
        .arg(st.join("docker-exec"))
        .arg("--pidfile")
        .arg(st.join("docker-daemon.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()));
    start_service(
        st,
        Service {
            name: "dockerd",
            command: cmd,
            ready: Box::new(|| matches!(http_get_unix(&sock, "/_ping"), Some((200, _)))),
            timeout: ready_timeout(),
        },
    )
}

fn start_registry(layout: &Layout) -> Result<()> {
    let st = &layout.state;
    let config = st.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {REGISTRY_ADDR}\n",
            st.join("registry").display()
        ),
    )?;
    let mut cmd = Command::new(which("docker-registry").context("docker-registry not found")?);
    cmd.arg("serve").arg(&config);
    if read_pid(&st.join("registry.pid")).is_none_or(|p| !alive(p))
        && http_get_tcp(REGISTRY_ADDR, "/v2/").is_some()
    {
        bail!(
            "something else already listens on {REGISTRY_ADDR}; stop it or run `cargo xtask env down`"
        );
    }
    start_service(
        st,
        Service {
            name: "registry",
            command: cmd,
            ready: Box::new(|| matches!(http_get_tcp(REGISTRY_ADDR, "/v2/"), Some((200, _)))),
            timeout: ready_timeout(),
        },
    )
}

fn start_buildkitd(layout: &Layout, buildkitd: &Path, auth: &authreg::Files) -> Result<()> {
    let st = &layout.state;
    let sock = layout.buildkit_sock();
    let config = st.join("buildkitd.toml");
    fs::write(
        &config,
        format!(
            "# The local test registry speaks plain HTTP.\n\
             [registry.\"{REGISTRY_NAME}\"]\n  http = true\n  insecure = true\n\
             [registry.\"{REGISTRY_ADDR}\"]\n  http = true\n  insecure = true\n\
             # The authenticated registry's CA.\n\
             [registry.\"{}\"]\n  ca = [\"{}\"]\n",
            authreg::address(),
            auth.ca().display()
        ),
    )?;
    let buildctl = buildkitd.with_file_name("buildctl");
    let mut cmd = Command::new(buildkitd);
    cmd.arg("--root")
        .arg(st.join("buildkit"))
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--config")
        .arg(&config)
        .args([
            "--oci-worker-net=host",
            "--allow-insecure-entitlement",
            "network.host",
        ])
        .args(["--allow-insecure-entitlement", "security.insecure"]);
    let addr = format!("unix://{}", sock.display());
    start_service(
        st,
        Service {
            name: "buildkitd",
            command: cmd,
            ready: Box::new(move || {
                sock.exists()
                    && Command::new(&buildctl)
                        .args(["--addr", &addr, "debug", "workers"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
            }),
            timeout: ready_timeout(),
        },
    )
}

/// The TLS + htpasswd registry, in its network namespace (see [`authreg`]).
fn start_auth_registry(layout: &Layout, auth: &authreg::Files) -> Result<()> {
    authreg::prepare_storage(auth, &layout.state.join("registry"))?;
    authreg::netns_up()?;
    let registry = which("docker-registry").context("docker-registry not found")?;
    let mut cmd = authreg::in_netns(&registry);
    cmd.arg("serve").arg(auth.config());
    let addr: std::net::SocketAddr = authreg::address().parse()?;
    start_service(
        &layout.state,
        Service {
            name: "auth-registry",
            command: cmd,
            ready: Box::new(move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            }),
            timeout: ready_timeout(),
        },
    )
}

fn docker(layout: &Layout) -> Command {
    let mut c = Command::new("docker");
    c.env(
        "DOCKER_HOST",
        format!("unix://{}", layout.docker_sock().display()),
    );
    c
}

/// `busybox:local` in dockerd and `localhost:5000/busybox:local` in the registry,
/// made from Debian's static busybox: nothing is pulled from the internet.
fn ensure_base_image(layout: &Layout) -> Result<()> {
    let sock = layout.docker_sock();
    // An image with an empty layer (a failed import) does not count.
    let have_image = match http_get_unix(&sock, "/images/busybox:local/json") {
        Some((200, body)) => image_size(&body) > 100_000,
        _ => false,
    };
    if !have_image {
        let rootfs = layout.p("busybox-rootfs");
        let _ = fs::remove_dir_all(&rootfs);
        make_busybox_rootfs(&rootfs)?;
        docker_import(layout, &rootfs, &[], "busybox:local")?;
        println!("env: imported busybox:local");
    }
    let in_registry = matches!(
        http_get_tcp(REGISTRY_ADDR, "/v2/busybox/manifests/local"),
        Some((200, _))
    );
    if !in_registry || !have_image {
        let remote = format!("{REGISTRY_NAME}/busybox:local");
        run_cmd(
            docker(layout).args(["tag", "busybox:local", &remote]),
            "docker tag",
        )?;
        run_cmd(docker(layout).args(["push", &remote]), "docker push")?;
        println!("env: pushed {remote}");
    }
    Ok(())
}

/// The `"Size"` of an image inspect answer.
fn image_size(json: &str) -> u64 {
    json.split("\"Size\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A root filesystem with the static busybox and a link for every applet.
pub fn make_busybox_rootfs(rootfs: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox not found (Debian package busybox-static)")?;
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin)?;
    for d in [
        "tmp", "etc", "root", "dev", "proc", "sys", "var", "usr/bin", "usr/sbin", "sbin",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy(&busybox, bin.join("busybox"))?;
    let list = run_cmd(Command::new(&busybox).arg("--list"), "busybox --list")?;
    for applet in list.lines().map(str::trim) {
        // Linking `busybox` itself would replace the binary with a link to itself.
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// The version label of the local buildkit image: the BuildKit release and a revision
/// of what `ensure_buildkit_image` puts in it (bump it when that changes).
fn buildkit_image_version() -> String {
    format!("{BUILDKIT_VERSION}-r2")
}

/// `buildkit-rs/buildkit:local`: buildkitd and buildctl (static), runc with its shared
/// libraries, busybox, and a config that knows the local registry speaks HTTP.
fn ensure_buildkit_image(layout: &Layout, buildkitd: &Path) -> Result<()> {
    let sock = layout.docker_sock();
    let label = format!("\"buildkit-rs.version\":\"{}\"", buildkit_image_version());
    if let Some((200, body)) = http_get_unix(&sock, &format!("/images/{BUILDKIT_IMAGE}/json"))
        && body.contains(&label)
    {
        return Ok(());
    }
    let rootfs = layout.p("buildkit-rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    make_busybox_rootfs(&rootfs)?;
    let usr_bin = rootfs.join("usr/bin");
    fs::create_dir_all(&usr_bin)?;
    for bin in ["buildkitd", "buildctl"] {
        fs::copy(buildkitd.with_file_name(bin), usr_bin.join(bin))?;
    }
    let runc = which("runc").context("runc not found (Debian package runc)")?;
    copy_with_libs(&runc, &rootfs, &usr_bin.join("runc"))?;
    for d in ["etc/buildkit", "var/lib/buildkit", "run/buildkit"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy(
        layout.p("buildkitd.toml"),
        rootfs.join("etc/buildkit/buildkitd.toml"),
    )?;
    docker_import(
        layout,
        &rootfs,
        &[
            "ENTRYPOINT [\"buildkitd\"]",
            &format!("LABEL buildkit-rs.version={}", buildkit_image_version()),
        ],
        BUILDKIT_IMAGE,
    )?;
    println!("env: made {BUILDKIT_IMAGE}");
    Ok(())
}

/// `tar -C rootfs -c . | docker import -c CHANGE... - image`, then removes `rootfs`.
fn docker_import(layout: &Layout, rootfs: &Path, changes: &[&str], image: &str) -> Result<()> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut import = docker(layout);
    import.arg("import");
    for c in changes {
        import.args(["-c", c]);
    }
    run_cmd_with_stdin(
        import
            .args(["-", image])
            .stdin(tar.stdout.take().expect("piped")),
        &format!("docker import {image}"),
    )?;
    let status = tar.wait()?;
    if !status.success() {
        bail!("tar of the {image} rootfs failed ({status})");
    }
    fs::remove_dir_all(rootfs)?;
    Ok(())
}

/// Copies `binary` to `dest` inside `rootfs`, with the shared libraries `ldd` lists.
fn copy_with_libs(binary: &Path, rootfs: &Path, dest: &Path) -> Result<()> {
    fs::copy(binary, dest)?;
    let out = run_cmd(Command::new("ldd").arg(binary), "ldd")?;
    for line in out.lines() {
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let lib = Path::new(lib);
        let target = rootfs.join(lib.strip_prefix("/")?);
        fs::create_dir_all(target.parent().unwrap())?;
        fs::copy(fs::canonicalize(lib)?, &target)?;
    }
    Ok(())
}

fn write_env_file(layout: &Layout) -> Result<()> {
    let vars = env_vars(layout);
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(layout.env_file(), text)?;
    Ok(())
}

/// The variables tests need, as written to the env file.
pub fn env_vars(layout: &Layout) -> Vec<(String, String)> {
    vec![
        (
            "DOCKER_HOST".into(),
            format!("unix://{}", layout.docker_sock().display()),
        ),
        (
            "BUILDKIT_HOST".into(),
            format!("unix://{}", layout.buildkit_sock().display()),
        ),
        ("BUILDKIT_RS_REGISTRY".into(), REGISTRY_NAME.into()),
        (
            "BUILDKIT_RS_STATE".into(),
            layout.state.display().to_string(),
        ),
        (
            "BUILDKIT_RS_BIN_DIR".into(),
            layout.bin_dir.display().to_string(),
        ),
        ("BUILDKIT_VERSION".into(), BUILDKIT_VERSION.into()),
        ("BUILDKIT_RS_BUILDKIT_IMAGE".into(), BUILDKIT_IMAGE.into()),
        ("BUILDKIT_RS_AUTH_REGISTRY".into(), authreg::address()),
        ("BUILDKIT_RS_AUTH_USER".into(), authreg::USER.into()),
        (
            "BUILDKIT_RS_AUTH_PASSWORD".into(),
            authreg::Files::new(&layout.state)
                .password()
                .unwrap_or_default(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_daemon_that_never_gets_ready_fails_within_its_timeout_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let err = start_service(
            dir.path(),
            Service {
                name: "stuck",
                command: shell(
                    "echo starting up; echo 'cannot bind: address in use' >&2; exec sleep 60",
                ),
                ready: Box::new(|| false),
                timeout: Duration::from_secs(2),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t.elapsed()
        );
        assert!(err.contains("stuck was not ready within 2s"), "{err}");
        assert!(err.contains("cannot bind: address in use"), "{err}");
        // The process was stopped and its pid file removed.
        assert!(!dir.path().join("stuck.pid").exists());
    }

    #[test]
    fn a_daemon_that_exits_fails_at_once_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let err = start_service(
            dir.path(),
            Service {
                name: "crashy",
                command: shell("echo 'fatal: no such file /etc/x.toml' >&2; exit 3"),
                ready: Box::new(|| false),
                timeout: Duration::from_secs(60),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t.elapsed()
        );
        assert!(err.contains("crashy exited before it was ready"), "{err}");
        assert!(err.contains("fatal: no such file /etc/x.toml"), "{err}");
    }

    #[test]
    fn a_ready_daemon_is_started_once() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("starts");
        let script = format!("echo x >> {}; exec sleep 30", marker.display());
        for _ in 0..2 {
            start_service(
                dir.path(),
                Service {
                    name: "ok",
                    command: shell(&script),
                    ready: Box::new(|| marker.exists()),
                    timeout: Duration::from_secs(10),
                },
            )
            .unwrap();
        }
        let pid = read_pid(&dir.path().join("ok.pid")).unwrap();
        assert!(alive(pid));
        assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 1);
        kill(pid, "-KILL");
    }
}
