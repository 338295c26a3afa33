//! The foundation reaches real BuildKit daemons with the generated Control client.

use buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use buildkit_proto::moby::buildkit::v1::{InfoRequest, ListWorkersRequest};
use hyper_util::rt::TokioIo;
use tests::TestEnv;
use tonic::transport::{Channel, Endpoint};

async fn buildkitd_channel(env: &TestEnv) -> Channel {
    let path = env.buildkit_socket();
    Endpoint::from_static("http://buildkitd")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connecting to buildkitd's socket")
}

async fn dockerd_grpc_channel(env: &TestEnv) -> Channel {
    let docker = env.docker();
    Endpoint::from_static("http://dockerd")
        .connect_with_connector(tower::service_fn(move |_| {
            let docker = docker.clone();
            async move {
                let io = docker
                    .upgrade("/grpc", "h2c", [], docker_api::Body::empty())
                    .await?;
                Ok::<_, docker_api::Error>(TokioIo::new(io))
            }
        }))
        .await
        .expect("upgrading dockerd's /grpc")
}

#[tokio::test]
async fn buildkitd_unix_socket_lists_workers_and_reports_version() {
    let env = TestEnv::get();
    let mut control = ControlClient::new(buildkitd_channel(&env).await);
    let workers = control
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .record;
    assert!(!workers.is_empty(), "buildkitd reported no workers");
    assert!(
        workers[0].platforms.iter().any(|p| p.os == "linux"),
        "{workers:?}"
    );
    assert_eq!(
        workers[0]
            .labels
            .get("org.mobyproject.buildkit.worker.executor")
            .map(String::as_str),
        Some("oci")
    );

    let info = control
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let version = info.buildkit_version.expect("Info carries a version");
    assert_eq!(version.package, "github.com/moby/buildkit");
    assert!(
        version.version.starts_with('v'),
        "version {:?}",
        version.version
    );
}

#[tokio::test]
async fn dockerd_grpc_upgrade_lists_the_engine_worker() {
    let env = TestEnv::get();
    let mut control = ControlClient::new(dockerd_grpc_channel(&env).await);
    let workers = control
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .record;
    assert_eq!(workers.len(), 1, "{workers:?}");
    // The Engine's embedded BuildKit has exactly one worker, the moby worker.
    assert_eq!(workers[0].id, "moby", "{workers:?}");
    assert!(
        workers[0].platforms.iter().any(|p| p.os == "linux"),
        "{workers:?}"
    );
}
