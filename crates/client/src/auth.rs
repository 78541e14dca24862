//! Logging in: with [`ClientOptions::credentials`] the client authenticates
//! when it connects and sends the token with every call (gRPC metadata
//! `token`, as etcd's Go client). When a server answers that the token is
//! invalid (a simple token expired, or the member restarted) or that the
//! auth state moved on ("revision of auth store is old"), the client logs
//! in again and repeats the call once, so callers never see it, as
//! clientv3 does.
//!
//! [`ClientOptions::credentials`]: crate::ClientOptions::credentials

use std::sync::Arc;

use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::AuthenticateRequest;
use parking_lot::RwLock;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A user name and password (etcdctl's `--user name:password`).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { user: user.into(), password: password.into() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// The token the client sends, shared by every call of a client and its clones.
#[derive(Clone, Default)]
pub(crate) struct Token(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl Token {
    pub(crate) fn set(&self, token: &str) -> Result<(), Status> {
        let value = token.parse().map_err(|_| Status::internal("the server sent a token that is not text"))?;
        *self.0.write() = Some(value);
        Ok(())
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.read().is_some()
    }
}

/// Adds the token to each call.
#[derive(Clone)]
pub(crate) struct WithToken(Token);

impl Interceptor for WithToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = self.0 .0.read().clone() {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

/// What every call goes over: a channel that adds the token.
pub(crate) type Transport = InterceptedService<Channel, WithToken>;

pub(crate) fn transport(channel: Channel, token: &Token) -> Transport {
    InterceptedService::new(channel, WithToken(token.clone()))
}

/// Logs in over `channel` and keeps the token. A server with auth off
/// answers "authentication is not enabled": the client goes on without a
/// token (as clientv3 does).
pub(crate) async fn log_in(channel: Channel, credentials: &Credentials, token: &Token) -> Result<(), Status> {
    let request = AuthenticateRequest { name: credentials.user.clone(), password: credentials.password.clone() };
    match AuthClient::new(channel).authenticate(request).await {
        Ok(response) => token.set(&response.into_inner().token),
        Err(status) if status.message() == "etcdserver: authentication is not enabled" => Ok(()),
        Err(status) => Err(status),
    }
}

/// Whether logging in again may cure `status`.
pub(crate) fn token_stale(status: &Status) -> bool {
    matches!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
            | (Code::InvalidArgument, "etcdserver: revision of auth store is old")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_refusals_call_for_a_new_login() {
        assert!(token_stale(&Status::unauthenticated("etcdserver: invalid auth token")));
        assert!(token_stale(&Status::invalid_argument("etcdserver: revision of auth store is old")));
        assert!(!token_stale(&Status::permission_denied("etcdserver: permission denied")));
        assert!(!token_stale(&Status::invalid_argument("etcdserver: user name is empty")));
    }

    #[test]
    fn credentials_never_print_the_password() {
        let shown = format!("{:?}", Credentials::new("alice", "s3cret"));
        assert!(shown.contains("alice") && !shown.contains("s3cret"), "{shown}");
    }
}
