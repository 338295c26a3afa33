//! The [`Attachable`] seam and the small gRPC router a session serves.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use buildkit_proto::prost_types::FileDescriptorSet;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use prost::Message;
use tonic::server::NamedService;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// The request body services receive.
type ReqBody = UnsyncBoxBody<Bytes, tonic::Status>;

type BoxedService = BoxCloneSyncService<Request<ReqBody>, Response<tonic::body::Body>, Infallible>;

/// A service the client offers the daemon in a session: registry auth, secrets, SSH
/// agent forwarding, file sync, export receivers, ... Implement it to add your own.
pub trait Attachable: Send + 'static {
    /// Adds this attachable's gRPC services to the session's router.
    fn register(self: Box<Self>, router: &mut Router);
}

/// The gRPC services of a session, by service name, and the methods it advertises.
#[derive(Default)]
pub struct Router {
    services: BTreeMap<String, (BoxedService, Vec<String>)>,
}

impl Router {
    /// Adds a tonic-generated (or hand-written) gRPC service. Its methods are taken
    /// from BuildKit's descriptors; use [`Router::add_service_with_methods`] for a
    /// service they do not describe.
    pub fn add_service<S>(&mut self, svc: S) -> &mut Self
    where
        S: tower::Service<
                Request<ReqBody>,
                Response = Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let methods = service_methods(S::NAME);
        self.add_service_with_methods(svc, methods)
    }

    /// Adds a service advertising the given method paths (`/pkg.Service/Method`).
    /// A service under a name the router already has replaces the earlier one.
    pub fn add_service_with_methods<S>(&mut self, svc: S, methods: Vec<String>) -> &mut Self
    where
        S: tower::Service<
                Request<ReqBody>,
                Response = Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.insert(
            S::NAME.to_string(),
            (BoxCloneSyncService::new(svc), methods),
        );
        self
    }

    /// True when a service of that name is registered.
    pub fn has_service(&self, name: &str) -> bool {
        self.services.contains_key(name)
    }

    /// Every advertised method path, sorted.
    pub fn methods(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .services
            .values()
            .flat_map(|(_, m)| m.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn lookup(&self, path: &str) -> Option<BoxedService> {
        let name = path.strip_prefix('/')?.split('/').next()?;
        self.services.get(name).map(|(s, _)| s.clone())
    }
}

/// The hyper service that dispatches requests to the registered services.
#[derive(Clone)]
pub(crate) struct Dispatch(pub(crate) std::sync::Arc<Router>);

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let svc = self.0.lookup(req.uri().path());
        let path = req.uri().path().to_string();
        let req = req.map(|b| {
            b.map_err(|e| tonic::Status::internal(e.to_string()))
                .boxed_unsync()
        });
        Box::pin(async move {
            match svc {
                Some(svc) => svc.oneshot(req).await,
                None => Ok(tonic::Status::unimplemented(format!(
                    "the session does not serve {path}"
                ))
                .into_http()),
            }
        })
    }
}

/// The method paths of a service described in BuildKit's descriptor set, e.g.
/// `service_methods("moby.filesync.v1.Auth")` gives `/moby.filesync.v1.Auth/Credentials`, ...
pub fn service_methods(service: &str) -> Vec<String> {
    static DESCRIPTORS: OnceLock<FileDescriptorSet> = OnceLock::new();
    let fds = DESCRIPTORS.get_or_init(|| {
        FileDescriptorSet::decode(buildkit_proto::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes")
    });
    let mut out = Vec::new();
    for file in &fds.file {
        for svc in &file.service {
            let full = if file.package().is_empty() {
                svc.name().to_string()
            } else {
                format!("{}.{}", file.package(), svc.name())
            };
            if full == service {
                out.extend(svc.method.iter().map(|m| format!("/{full}/{}", m.name())));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors() {
        assert_eq!(
            service_methods("moby.filesync.v1.FileSend"),
            vec!["/moby.filesync.v1.FileSend/DiffCopy".to_string()]
        );
        let health = service_methods("grpc.health.v1.Health");
        assert!(health.contains(&"/grpc.health.v1.Health/Check".to_string()));
        assert!(service_methods("no.such.Service").is_empty());
    }
}
