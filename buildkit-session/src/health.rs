//! `grpc.health.v1.Health`: always served. The daemon checks every ~5 s and drops
//! sessions that stop answering.

use std::pin::Pin;

use buildkit_proto::grpc::health::v1::health_check_response::ServingStatus;
use buildkit_proto::grpc::health::v1::health_server::{Health as HealthService, HealthServer};
use buildkit_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::router::{Attachable, Router};

/// Answers `SERVING` for the whole session (service name `""`) and every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health;

impl Attachable for Health {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(HealthServer::new(*self));
    }
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl HealthService for Health {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(serving()))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // One SERVING, then the stream stays open: the status never changes.
        let first = futures_util::stream::once(async { Ok(serving()) });
        Ok(Response::new(Box::pin(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))))
    }
}
