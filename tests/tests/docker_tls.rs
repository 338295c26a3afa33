//! TLS against a second, real dockerd started by this test with its own CA, server
//! and client certificates (`--tlsverify`), and a unix socket beside the TCP port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docker_api::tls::TlsOptions;
use docker_api::{Docker, Filters};
use rcgen::ExtendedKeyUsagePurpose;
use tests::{Ca, free_port, short_tempdir};

/// The second dockerd. Dropping it stops the daemon (SIGTERM, so it also stops its
/// containerd; SIGKILL if it does not exit in time).
struct Daemon {
    child: Child,
    root: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd did not stop its containerd: stop that one too.
        if let Ok(pid) = std::fs::read_to_string(self.root.join("exec/containerd/containerd.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

fn start_dockerd(root: &Path, port: u16) -> Daemon {
    let p = |s: &str| root.join(s).display().to_string();
    std::fs::write(root.join("daemon.json"), "{}").unwrap();
    let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .args(["--config-file", &p("daemon.json")])
        .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
        .args(["--pidfile", &p("dockerd.pid")])
        .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
        .args([
            "--ip-forward=false",
            "--ip-masq=false",
            "--storage-driver=vfs",
        ])
        .args(["-H", &format!("tcp://127.0.0.1:{port}")])
        .args(["-H", &format!("unix://{}", p("d.sock"))])
        .args(["--tlsverify", "--tlscacert", &p("server/ca.pem")])
        .args([
            "--tlscert",
            &p("server/cert.pem"),
            "--tlskey",
            &p("server/key.pem"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("dockerd on PATH (Debian's docker.io)");
    Daemon {
        child,
        root: root.to_path_buf(),
    }
}

async fn wait_ready(daemon: &mut Daemon, unix: &Docker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if unix.ping().await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("dockerd exited ({status}):\n{}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer within 60 s:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tls_dockerd_accepts_our_certificates_and_rejects_a_wrong_ca() {
    let tmp = short_tempdir();
    let root = tmp.path();
    let ca = Ca::new("docker-api test CA");
    ca.issue(
        &root.join("server"),
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    ca.issue(
        &root.join("client"),
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    // A client that trusts another CA (its own certificate is still valid).
    let other = Ca::new("some other CA");
    ca.issue(
        &root.join("wrong"),
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    std::fs::write(root.join("wrong/ca.pem"), &other.pem).unwrap();

    let port = free_port();
    let mut daemon = start_dockerd(root, port);
    let unix = Docker::connect(&format!("unix://{}", root.join("d.sock").display())).unwrap();
    wait_ready(&mut daemon, &unix).await;

    // DOCKER_CERT_PATH layout, verified against our CA, with our client certificate.
    let addr = format!("tcp://127.0.0.1:{port}");
    let docker = Docker::builder()
        .address(&addr)
        .tls(TlsOptions::from_cert_dir(root.join("client")))
        .build()
        .unwrap();
    let ping = docker.ping().await.unwrap();
    assert_eq!(ping.os_type.as_deref(), Some("linux"));
    let version = docker.system().version().await.unwrap();
    assert!(version.api_version.is_some());
    let containers = docker
        .containers()
        .list(true, &Filters::new())
        .await
        .unwrap();
    assert!(containers.is_empty(), "{containers:?}");
    let images = docker.images().list(&Default::default()).await.unwrap();
    assert!(
        images.is_empty(),
        "a fresh daemon has no images: {images:?}"
    );
    // The same daemon over its unix socket agrees.
    let info_tls = docker.system().info().await.unwrap();
    let info_unix = unix.system().info().await.unwrap();
    assert_eq!(info_tls.id, info_unix.id);
    assert!(info_tls.id.is_some());

    // A server name other than the one dialled is verified when asked for.
    let by_name = Docker::builder()
        .address(&addr)
        .tls(TlsOptions::from_cert_dir(root.join("client")).server_name("localhost"))
        .build()
        .unwrap();
    by_name.ping().await.unwrap();

    // The wrong CA: a certificate error, promptly, not a hang.
    let wrong = Docker::builder()
        .address(&addr)
        .tls(TlsOptions::from_cert_dir(root.join("wrong")))
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), wrong.ping())
        .await
        .expect("a rejected certificate fails fast")
        .unwrap_err();
    assert!(err.is_tls(), "{err}");
    assert!(err.is_connect(), "{err}");
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains(&addr), "{text}");

    // No client certificate: the daemon (--tlsverify) refuses.
    let anonymous = Docker::builder()
        .address(&addr)
        .tls(TlsOptions::default().ca_file(root.join("client/ca.pem")))
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), anonymous.ping())
        .await
        .expect("a missing client certificate fails fast")
        .unwrap_err();
    assert!(err.is_tls(), "{err}");

    // Plain HTTP to the TLS port is not mistaken for a working daemon.
    let plain = Docker::connect(&addr).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), plain.ping())
        .await
        .expect("plain HTTP to a TLS port fails fast");
    assert!(result.is_err(), "{result:?}");

    drop(daemon);
    // Stopped: nothing answers on the socket any more (a fresh client, so no pooled
    // connection is reused).
    let after = Docker::connect(&format!("unix://{}", root.join("d.sock").display())).unwrap();
    let err = after.ping().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}
