//! System and volume endpoints against the real dockerd, and connection errors.

use docker_api::{ApiVersion, Docker, Filters, VolumeOptions};
use tests::{Cleanup, Leftover, TestEnv, unique_name};

#[tokio::test]
async fn ping_version_info_and_disk_usage() {
    let env = TestEnv::get();
    let docker = env.docker();
    let ping = docker.system().ping().await.unwrap();
    assert_eq!(ping.os_type.as_deref(), Some("linux"));
    let daemon_api = ping.api_version.expect("the Engine sends API-Version");
    // Negotiated: the lower of the daemon's and ours.
    assert_eq!(
        docker.api_version().await.unwrap(),
        daemon_api.min(docker_api::MAX_API_VERSION)
    );

    let version = docker.system().version().await.unwrap();
    assert_eq!(
        version.api_version.as_deref(),
        Some(&*daemon_api.to_string())
    );
    assert_eq!(version.os.as_deref(), Some("linux"));
    assert!(
        version.components.iter().any(|c| c.name == "Engine"),
        "{version:?}"
    );

    let info = docker.system().info().await.unwrap();
    assert!(info.ncpu.unwrap() >= 1);
    assert!(info.mem_total.unwrap() > 0);
    assert_eq!(info.os_type.as_deref(), Some("linux"));
    assert!(
        info.docker_root_dir
            .as_deref()
            .is_some_and(|d| d.starts_with(&*env.state.to_string_lossy())),
        "{info:?}"
    );

    let df = docker.system().disk_usage().await.unwrap();
    assert!(
        df.images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == "busybox:local")),
        "{df:?}"
    );
    assert!(df.layers_size.unwrap() > 0);
}

#[tokio::test]
async fn a_pinned_api_version_is_used_as_is() {
    let env = TestEnv::get();
    let docker = Docker::builder()
        .address(&env.docker_host)
        .api_version(ApiVersion::new(1, 40))
        .build()
        .unwrap();
    assert_eq!(docker.api_version().await.unwrap(), ApiVersion::new(1, 40));
    // The daemon accepts older versions in the path.
    docker.system().version().await.unwrap();
    let docker = Docker::builder()
        .address(&env.docker_host)
        .api_version(ApiVersion::new(1, 99))
        .build()
        .unwrap();
    let err = docker.system().version().await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.message().is_some_and(|m| m.contains("1.99")), "{err}");
}

#[tokio::test]
async fn volumes_create_list_inspect_remove() {
    let env = TestEnv::get();
    let docker = env.docker();
    let name = unique_name("docker-api-vol");
    let _guard = Cleanup::new(&env, Leftover::Volume(name.clone()));
    let created = docker
        .volumes()
        .create(
            &VolumeOptions::new()
                .name(&name)
                .label("docker-api-test", &name),
        )
        .await
        .unwrap();
    assert_eq!(created.name, name);
    assert_eq!(created.driver, "local");
    assert!(!created.mountpoint.is_empty());

    let listed = docker
        .volumes()
        .list(&Filters::new().label(format!("docker-api-test={name}")))
        .await
        .unwrap();
    assert_eq!(listed.volumes.len(), 1, "{listed:?}");
    assert_eq!(listed.volumes[0].name, name);
    assert_eq!(listed.volumes[0].labels.get("docker-api-test"), Some(&name));
    assert_eq!(docker.volumes().inspect(&name).await.unwrap().name, name);

    docker.volumes().remove(&name, false).await.unwrap();
    let err = docker.volumes().inspect(&name).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let listed = docker
        .volumes()
        .list(&Filters::new().add("name", &name))
        .await
        .unwrap();
    assert!(listed.volumes.is_empty(), "{listed:?}");

    // An anonymous volume gets a generated name.
    let anon = docker
        .volumes()
        .create(&VolumeOptions::new())
        .await
        .unwrap();
    let _anon = Cleanup::new(&env, Leftover::Volume(anon.name.clone()));
    assert_eq!(anon.name.len(), 64, "{anon:?}");
    docker.volumes().remove(&anon.name, true).await.unwrap();
}

#[tokio::test]
async fn a_missing_socket_names_the_address_and_docker_host() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix://{}/no-daemon.sock", dir.path().display());
    let docker = Docker::connect(&addr).unwrap();
    let err = docker.system().info().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert_eq!(err.endpoint(), addr);
    let text = err.to_string();
    assert!(text.contains(&addr), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(text.contains("DOCKER_HOST"), "{text}");

    // A refused TCP port says the same.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("tcp://127.0.0.1:{port}");
    let err = Docker::connect(&addr).unwrap().ping().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("refused"), "{text}");
    assert!(text.contains("DOCKER_HOST"), "{text}");
}
