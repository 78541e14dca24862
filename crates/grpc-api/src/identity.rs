//! Who a request runs as. etcd reads the token from gRPC metadata `token`
//! (or `authorization`, as its JSON gateway forwards it) and, without one,
//! takes the user from the verified client certificate's common name.
//! Every handler resolves its caller here first; the member then checks
//! the caller's permissions where etcd does (reads where served, writes
//! when applied), with the rules of `keel-auth`.

use keel_auth::AuthInfo;
use keel_node::Member;
use tonic::{Request, Status};

use crate::errors::node_error;

const TOKEN: &str = "token";
const AUTHORIZATION: &str = "authorization";

/// A stream's token and certificate name, kept to resolve the caller again
/// for each message (a token's lifetime restarts with every use).
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    token: Option<String>,
    certificate: Option<String>,
}

impl Credentials {
    pub(crate) fn of<T>(request: &Request<T>) -> Credentials {
        let metadata = request.metadata();
        let token = metadata.get(TOKEN).or_else(|| metadata.get(AUTHORIZATION)).and_then(|v| v.to_str().ok());
        // Verified by the listener, which asks for client certificates only
        // with --client-cert-auth, as etcd takes CN users only then.
        let certificate = keel_tls::peer_common_name(request);
        Credentials { token: token.map(str::to_owned), certificate }
    }

    pub(crate) async fn resolve(&self, member: &Member) -> Result<AuthInfo, Status> {
        member.auth_info(self.token.as_deref(), self.certificate.as_deref()).await.map_err(node_error)
    }
}

/// The caller of `request`: an unknown or expired token is refused with
/// etcd's "invalid auth token"; no token and no certificate make an
/// anonymous caller, whom the member refuses while auth is on.
pub(crate) async fn caller<T>(member: &Member, request: &Request<T>) -> Result<AuthInfo, Status> {
    Credentials::of(request).resolve(member).await
}

/// Refuses `request` unless its caller has the root role (auth on).
pub(crate) async fn require_admin<T>(member: &Member, request: &Request<T>) -> Result<(), Status> {
    let who = caller(member, request).await?;
    member.check_admin(&who).map_err(node_error)
}

/// Refuses `request` when its caller names no user (auth on).
pub(crate) async fn require_user<T>(member: &Member, request: &Request<T>) -> Result<(), Status> {
    let who = caller(member, request).await?;
    member.check_authenticated(&who).map_err(node_error)
}
