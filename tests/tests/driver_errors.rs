//! Bad input and unreachable daemons give clear errors, quickly, and never hang.

use std::time::Duration;

use buildkit_driver::{Build, Driver, Moby, Remote};
use buildkit_session::Secrets;
use docker_api::tls::TlsOptions;
use tests::{MtlsBuildkitd, TestEnv, free_port};

fn ctx() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    d
}

async fn solve_err(driver: &dyn Driver, build: Build) -> buildkit_driver::Error {
    tokio::time::timeout(Duration::from_secs(60), async {
        match driver.solve(build).await {
            Ok(h) => h.await.unwrap_err(),
            Err(e) => e,
        }
    })
    .await
    .expect("the error came within a minute")
}

#[tokio::test]
async fn a_missing_buildkitd_socket_names_the_address_and_buildkit_host() {
    let d = ctx();
    let driver = Remote::new("unix:///nonexistent/dir/buildkitd.sock").unwrap();
    let msg = solve_err(&driver, Build::dockerfile(d.path()))
        .await
        .to_string();
    assert!(
        msg.contains("unix:///nonexistent/dir/buildkitd.sock"),
        "{msg}"
    );
    assert!(msg.contains("BUILDKIT_HOST"), "{msg}");
    assert!(msg.contains("driver remote"), "{msg}");
}

#[tokio::test]
async fn a_refused_tcp_port_is_a_connect_error() {
    let d = ctx();
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let driver = Remote::new(&addr).unwrap();
    let msg = solve_err(&driver, Build::dockerfile(d.path()))
        .await
        .to_string();
    assert!(msg.contains(&addr), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    let env = TestEnv::get();
    let daemon = MtlsBuildkitd::get(&env);
    let d = ctx();
    let driver = Remote::new(&daemon.address)
        .unwrap()
        .tls(TlsOptions::from_cert_dir(&daemon.stranger_dir))
        .unwrap();
    let msg = solve_err(&driver, Build::dockerfile(d.path()))
        .await
        .to_string();
    // The stranger CA does not know the server either.
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("tls"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_docker_socket_mentions_docker_host() {
    let d = ctx();
    let driver = Moby::new(docker_api::Docker::connect("unix:///nonexistent/docker.sock").unwrap());
    let msg = solve_err(&driver, Build::dockerfile(d.path()))
        .await
        .to_string();
    assert!(msg.contains("unix:///nonexistent/docker.sock"), "{msg}");
    assert!(msg.contains("DOCKER_HOST"), "{msg}");
}

#[test]
fn invalid_addresses_are_refused_up_front() {
    let err = Remote::new("http://buildkitd:1234")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unix:///path or tcp://host:port"), "{err}");
    let err = Remote::new("tcp://buildkitd").unwrap_err().to_string();
    assert!(err.contains("host:port"), "{err}");
    let err = Remote::new("unix:///run/b.sock")
        .unwrap()
        .tls(TlsOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS needs a tcp:// address"), "{err}");
}

#[tokio::test]
async fn an_unreadable_secret_fails_before_the_build_naming_it() {
    let env = TestEnv::get();
    let d = ctx();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let build =
        Build::dockerfile(d.path()).secrets(Secrets::new().file("deploy_key", "/nonexistent/key"));
    let err = solve_err(&driver, build).await;
    let msg = err.to_string();
    assert!(matches!(err, buildkit_driver::Error::Session(_)), "{msg}");
    assert!(msg.contains("deploy_key"), "{msg}");
    assert!(msg.contains("/nonexistent/key"), "{msg}");
}

#[tokio::test]
async fn a_missing_context_or_dockerfile_fails_before_the_build() {
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let msg = solve_err(&driver, Build::dockerfile("/nonexistent/context"))
        .await
        .to_string();
    assert!(
        msg.contains("the build context /nonexistent/context is not a directory"),
        "{msg}"
    );
    let d = tempfile::tempdir().unwrap();
    let msg = solve_err(&driver, Build::dockerfile(d.path()))
        .await
        .to_string();
    assert!(msg.contains("no Dockerfile at"), "{msg}");
    assert!(
        msg.contains(&d.path().join("Dockerfile").display().to_string()),
        "{msg}"
    );
}
