//! How the load generator connects, and the certificate of `--tls` runs.
//!
//! `http://` endpoints are dialled as before; `https://` ones with TLS,
//! skipping verification (as `etcdctl --insecure-skip-tls-verify`): the
//! handshake and the encryption, what TLS costs, are the same.
//!
//! Both systems serve one self-signed ECDSA P-256 certificate, made once
//! per run. Not their `--auto-tls` ones: etcd's are P-521, which rustls
//! (ring) cannot verify, so a Rust client cannot even skip-verify them.
//!
//! With `--auth`, [`enable_auth`] sets a server up as etcd's docs do and
//! logs in as a user with READWRITE on every key (not root: root skips the
//! permission checks), and every connection dialled afterwards sends that
//! user's token on every request.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};

use anyhow::{anyhow, Context, Result};
use http::Uri;
use hyper_util::rt::TokioExecutor;
use keel_proto::authpb::{permission, Permission};
use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, AuthenticateRequest,
};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tower_service::Service;

/// A connection for the runs' set-up and control calls: a tonic channel
/// that sends the current token, if any.
pub(super) type Dialled = InterceptedService<Channel, AddToken>;

/// A connection of the load generator: one HTTP/2 connection whose
/// requests are handed from the calling task straight to the connection's
/// task, as grpc-go's client (etcd's benchmark tool) hands them, and that
/// sends the current token, if any. A tonic `Channel` puts a buffer task
/// in between, one more task hop per request: generator CPU spent on the
/// two cores the measured servers run on.
pub(super) type Conn = InterceptedService<Direct, AddToken>;

/// Adds the token of the `--auth` user (as etcd's clients do, metadata `token`).
#[derive(Clone)]
pub(super) struct AddToken(Option<AsciiMetadataValue>);

impl AddToken {
    /// Sends the token set by [`set_token`] now, if any.
    fn current() -> AddToken {
        AddToken(TOKEN.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// The token connections dialled from now on send; `None` with auth off.
static TOKEN: Mutex<Option<AsciiMetadataValue>> = Mutex::new(None);

pub(super) fn set_token(token: Option<&str>) -> Result<()> {
    let value = token.map(MetadataValue::try_from).transpose().context("a token that is not ASCII")?;
    *TOKEN.lock().unwrap_or_else(|e| e.into_inner()) = value;
    Ok(())
}

pub(super) async fn dial(endpoint: Endpoint) -> Result<Dialled, tonic::transport::Error> {
    let token = AddToken::current();
    let channel = if endpoint.uri().scheme_str() != Some("https") {
        endpoint.connect().await?
    } else {
        endpoint.connect_with_connector(keel_tls::Connector::new(Some(skip_verify()))).await?
    };
    Ok(InterceptedService::new(channel, token))
}

/// Opens a load generator connection to `url` (`http://` or `https://`).
pub(super) async fn connect(url: &str) -> Result<Conn> {
    let uri: Uri = url.parse().with_context(|| format!("endpoint {url}"))?;
    let io = keel_tls::Connector::new(Some(skip_verify()))
        .call(uri.clone())
        .await
        .map_err(|e| anyhow!("connect to {url}: {e}"))?;
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .with_context(|| format!("HTTP/2 handshake with {url}"))?;
    tokio::spawn(connection);
    let parts = uri.into_parts();
    let scheme = parts.scheme.ok_or_else(|| anyhow!("endpoint {url} without a scheme"))?;
    let authority = parts.authority.ok_or_else(|| anyhow!("endpoint {url} without a host"))?;
    let token = AddToken::current();
    Ok(InterceptedService::new(Direct { send, scheme, authority }, token))
}

/// One HTTP/2 connection's sender, adding the endpoint's scheme and
/// authority to each request's path (tonic's clients send the path alone).
#[derive(Clone)]
pub(super) struct Direct {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

type Responding = Pin<Box<dyn Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Direct {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Responding;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<hyper::Result<()>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Responding {
        let (mut head, body) = request.into_parts();
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        head.uri = Uri::from_parts(uri).expect("a path with the endpoint's scheme and authority");
        Box::pin(self.send.send_request(http::Request::from_parts(head, body)))
    }
}

/// The user every `--auth` request runs as (its role has the same name).
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

/// Turns auth on at `url` (a user `root` with role `root`; a user `bench`
/// whose role reads and writes every key, etcd's "\0" to "\0"), then
/// logs in as `bench` and returns its token.
pub(super) async fn enable_auth(url: &str) -> Result<String> {
    let mut auth = AuthClient::new(dial(Endpoint::from_shared(url.to_owned())?).await?);
    let user = |name: &str, password: &str| AuthUserAddRequest {
        name: name.to_owned(),
        password: password.to_owned(),
        ..Default::default()
    };
    let grant = |user: &str, role: &str| AuthUserGrantRoleRequest { user: user.to_owned(), role: role.to_owned() };
    auth.role_add(AuthRoleAddRequest { name: "root".into() }).await.context("role add root")?;
    auth.user_add(user("root", "root-password")).await.context("user add root")?;
    auth.user_grant_role(grant("root", "root")).await.context("grant root to root")?;
    auth.role_add(AuthRoleAddRequest { name: USER.into() }).await.context("role add")?;
    let every_key = Permission { perm_type: permission::Type::Readwrite as i32, key: vec![0], range_end: vec![0] };
    let permission = AuthRoleGrantPermissionRequest { name: USER.into(), perm: Some(every_key) };
    auth.role_grant_permission(permission).await.context("role grant-permission")?;
    auth.user_add(user(USER, PASSWORD)).await.context("user add")?;
    auth.user_grant_role(grant(USER, USER)).await.context("user grant-role")?;
    auth.auth_enable(AuthEnableRequest {}).await.context("auth enable")?;
    let login = AuthenticateRequest { name: USER.into(), password: PASSWORD.into() };
    Ok(auth.authenticate(login).await.context("authenticate")?.into_inner().token)
}

/// Server flags of `--auth` runs: simple tokens that outlive any run.
pub(super) const AUTH_FLAGS: [&str; 4] = ["--auth-token", "simple", "--auth-token-ttl", "3600"];

fn skip_verify() -> keel_tls::ClientTls {
    static TLS: OnceLock<keel_tls::ClientTls> = OnceLock::new();
    TLS.get_or_init(|| {
        keel_tls::ClientTls::new(keel_tls::ClientTlsOptions { insecure_skip_verify: true, ..Default::default() })
            .expect("a client TLS configuration without files")
    })
    .clone()
}

/// A certificate and key file, in the directory that holds them while the run lasts.
type Files = (tempfile::TempDir, (PathBuf, PathBuf));

/// The (cert, key) files every server of this run serves, valid for
/// 127.0.0.1 and localhost; members trust it as their peers' CA.
pub(super) fn certificate() -> Result<&'static (PathBuf, PathBuf)> {
    static FILES: OnceLock<Result<Files, String>> = OnceLock::new();
    let made = FILES.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let files = keel_tls::self_signed(dir.path(), &hosts, 1).map_err(|e| e.to_string())?;
        Ok((dir, files))
    });
    made.as_ref().map(|(_, files)| files).map_err(|e| anyhow!("bench certificate: {e}"))
}
