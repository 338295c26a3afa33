//! The authenticated registry of the test environment: TLS with a CA made here and
//! htpasswd users, in a network namespace of its own joined by a veth pair (198.18.0.0/15,
//! the benchmarking range). dockerd treats every loopback registry as plain HTTP, so a
//! TLS registry must live at another address; dockerd and buildkitd are told to trust
//! the CA before they start.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The namespace.
const NETNS: &str = "bkrs-env";
/// The veth ends (outside, inside).
const VETH: (&str, &str) = ("bkrsenv0", "bkrsenv1");
/// This machine's end of the link.
const HOST_IP: &str = "198.18.0.1";
/// The registry's address.
pub const IP: &str = "198.18.0.2";
/// The registry's port.
pub const PORT: u16 = 5443;
/// The user the registry knows.
pub const USER: &str = "buildkit-rs";

/// `IP:PORT`.
pub fn address() -> String {
    format!("{IP}:{PORT}")
}

/// Where dockerd looks for a registry's CA.
pub fn docker_certs_dir() -> PathBuf {
    PathBuf::from(format!("/etc/docker/certs.d/{}", address()))
}

/// Files of the registry under the state directory.
pub struct Files {
    /// Its directory.
    pub dir: PathBuf,
}

impl Files {
    /// Under `state`.
    pub fn new(state: &Path) -> Self {
        Self {
            dir: state.join("auth-registry"),
        }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The password, made once.
    pub fn password(&self) -> Result<String> {
        Ok(fs::read_to_string(self.dir.join("password"))?
            .trim()
            .to_string())
    }

    /// The registry's config.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yml")
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn netns_exists() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(NETNS))
        })
        .unwrap_or(false)
}

/// The namespace and its link (idempotent).
pub fn netns_up() -> Result<()> {
    if netns_exists() {
        return Ok(());
    }
    let _ = Command::new("ip").args(["link", "del", VETH.0]).output();
    ip(&["netns", "add", NETNS])?;
    ip(&[
        "link", "add", VETH.0, "type", "veth", "peer", "name", VETH.1,
    ])?;
    ip(&["link", "set", VETH.1, "netns", NETNS])?;
    ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", VETH.0])?;
    ip(&["link", "set", VETH.0, "up"])?;
    ip(&[
        "netns",
        "exec",
        NETNS,
        "ip",
        "addr",
        "add",
        &format!("{IP}/30"),
        "dev",
        VETH.1,
    ])?;
    ip(&["netns", "exec", NETNS, "ip", "link", "set", VETH.1, "up"])?;
    ip(&["netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes the namespace (and with it the link).
pub fn netns_down() {
    let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
}

/// A command run inside the namespace.
pub fn in_netns(program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", NETNS]).arg(program);
    c
}

/// CA, server certificate, htpasswd and config, made once per state directory; the
/// CA is put where dockerd looks for it (read when dockerd starts).
pub fn prepare_certs(files: &Files) -> Result<()> {
    let dir = &files.dir;
    if files.config().exists() && files.ca().exists() && docker_certs_dir().join("ca.crt").exists()
    {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "buildkit-rs test registry CA");
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(Vec::<String>::new())?;
    server.subject_alt_names = vec![SanType::IpAddress(IP.parse()?)];
    server.distinguished_name.push(DnType::CommonName, IP);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = server.signed_by(&key, &issuer)?;
    fs::write(files.ca(), &ca_pem)?;
    fs::write(dir.join("cert.pem"), cert.pem())?;
    fs::write(dir.join("key.pem"), key.serialize_pem())?;

    let password = format!("pw-{:016x}", rand_u64());
    fs::write(dir.join("password"), &password)?;
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, &password])
        .output()
        .context("running htpasswd (apache2-utils)")?;
    if !out.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(dir.join("htpasswd"), &out.stdout)?;
    let storage = dir.join("storage");
    fs::write(
        files.config(),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: buildkit-rs\n    path: {}\n",
            storage.display(),
            address(),
            dir.join("cert.pem").display(),
            dir.join("key.pem").display(),
            dir.join("htpasswd").display(),
        ),
    )?;
    fs::create_dir_all(docker_certs_dir())?;
    fs::write(docker_certs_dir().join("ca.crt"), &ca_pem)?;
    Ok(())
}

/// The registry's storage: a copy of the main registry's (which holds
/// `busybox:local`), made once.
pub fn prepare_storage(files: &Files, main_storage: &Path) -> Result<()> {
    let storage = files.dir.join("storage");
    if storage
        .join("docker/registry/v2/repositories/busybox")
        .exists()
    {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&storage);
    let st = Command::new("cp")
        .arg("-a")
        .arg(main_storage)
        .arg(&storage)
        .status()?;
    if !st.success() {
        bail!("copying the registry storage failed");
    }
    Ok(())
}

/// Removes what [`prepare_certs`] put outside the state directory.
pub fn unprepare() {
    let _ = fs::remove_dir_all(docker_certs_dir());
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
