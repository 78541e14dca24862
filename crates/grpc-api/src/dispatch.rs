//! The client port's one service: a gRPC call goes straight to its
//! service, found by the first segment of its path; anything else goes to
//! the HTTP routes (the JSON gateway, v2, probes, metrics).
//!
//! tonic's `Routes` would put every call through axum's router as well: a
//! path match that percent-decodes and stores the path's parameters, and
//! the request and response bodies boxed again on the way in and out,
//! seven allocations per call in all (counted with a `malloc` uprobe at
//! 64 clients), for a choice that is one string comparison.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use keel_proto::etcdserverpb::auth_server::AuthServer;
use keel_proto::etcdserverpb::cluster_server::ClusterServer;
use keel_proto::etcdserverpb::kv_server::KvServer;
use keel_proto::etcdserverpb::lease_server::LeaseServer;
use keel_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use keel_proto::etcdserverpb::watch_server::WatchServer;
use keel_proto::v3electionpb::election_server::ElectionServer;
use keel_proto::v3lockpb::lock_server::LockServer;
use tonic::server::NamedService;
use tonic::service::interceptor::{InterceptedService, ResponseBody};
use tower::ServiceExt;

use crate::errors::LeaderRequired;
use crate::metrics::{Measured, MeteredBody};
use crate::{
    AuthService, ClusterService, ElectionService, KvService, LeaseService, LockService, MaintenanceService,
    WatchService,
};

/// A service as the client port serves it: measured, behind etcd's
/// `hasleader` interceptor.
pub(crate) type Api<S> = InterceptedService<Measured<S>, LeaderRequired>;

/// Every client service, and the HTTP routes for the rest.
#[derive(Clone)]
pub(crate) struct ClientApi {
    pub kv: Api<KvServer<KvService>>,
    pub lease: Api<LeaseServer<LeaseService>>,
    pub watch: Api<WatchServer<WatchService>>,
    pub cluster: Api<ClusterServer<ClusterService>>,
    pub lock: Api<LockServer<LockService>>,
    pub election: Api<ElectionServer<ElectionService>>,
    pub maintenance: Api<MaintenanceServer<MaintenanceService>>,
    pub auth: Api<AuthServer<AuthService>>,
    /// With a fallback for paths nobody serves.
    pub http: axum::Router,
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<ApiBody>, Infallible>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for ClientApi {
    type Response = http::Response<ApiBody>;
    type Error = Infallible;
    type Future = Answer;

    /// Each call readies its own clone of the service it goes to (tonic's
    /// generated servers and axum's router are always ready).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Answer {
        fn grpc<S>(service: &Api<S>, request: http::Request<tonic::body::Body>) -> Answer
        where
            Api<S>: tower_service::Service<
                    http::Request<tonic::body::Body>,
                    Response = http::Response<ResponseBody<MeteredBody<tonic::body::Body>>>,
                    Error = Infallible,
                > + Clone
                + Send
                + 'static,
            <Api<S> as tower_service::Service<http::Request<tonic::body::Body>>>::Future: Send,
        {
            let service = service.clone();
            Box::pin(async move { Ok(service.oneshot(request).await?.map(ApiBody::Grpc)) })
        }
        let name = service_name(request.uri().path());
        match name {
            _ if name == KvServer::<KvService>::NAME => grpc(&self.kv, request),
            _ if name == WatchServer::<WatchService>::NAME => grpc(&self.watch, request),
            _ if name == LeaseServer::<LeaseService>::NAME => grpc(&self.lease, request),
            _ if name == LockServer::<LockService>::NAME => grpc(&self.lock, request),
            _ if name == ElectionServer::<ElectionService>::NAME => grpc(&self.election, request),
            _ if name == ClusterServer::<ClusterService>::NAME => grpc(&self.cluster, request),
            _ if name == MaintenanceServer::<MaintenanceService>::NAME => grpc(&self.maintenance, request),
            _ if name == AuthServer::<AuthService>::NAME => grpc(&self.auth, request),
            _ => {
                let http = self.http.clone();
                Box::pin(async move { Ok(http.oneshot(request).await?.map(ApiBody::Http)) })
            }
        }
    }
}

/// The gRPC service a path names (`/etcdserverpb.KV/Put`: `etcdserverpb.KV`),
/// or "" for a path of any other shape.
fn service_name(path: &str) -> &str {
    path.strip_prefix('/').and_then(|path| path.split_once('/')).map_or("", |(name, _)| name)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response of the client port: a gRPC service's, or an HTTP route's.
pub(crate) enum ApiBody {
    Grpc(ResponseBody<MeteredBody<tonic::body::Body>>),
    Http(axum::body::Body),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ApiBody::Grpc(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ApiBody::Http(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Grpc(body) => body.is_end_stream(),
            ApiBody::Http(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Grpc(body) => body.size_hint(),
            ApiBody::Http(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_names_its_service() {
        assert_eq!(service_name("/etcdserverpb.KV/Put"), KvServer::<KvService>::NAME);
        assert_eq!(service_name("/v3lockpb.Lock/Unlock"), LockServer::<LockService>::NAME);
        assert_eq!(service_name("/v3electionpb.Election/Observe"), ElectionServer::<ElectionService>::NAME);
        // The JSON gateway's paths name no service of these.
        assert_eq!(service_name("/v3/kv/put"), "v3");
        for other in ["/etcdserverpb.KV", "/health", "/", "", "etcdserverpb.KV/Put"] {
            assert_eq!(service_name(other), "", "{other:?}");
        }
    }
}
