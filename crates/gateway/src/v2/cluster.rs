//! `/v2/members` (etcd's `membersHandler`) and `/v2/machines`.
//!
//! Member JSON is Go's: `{"id":..,"name":..,"peerURLs":[..],"clientURLs":[..]}`
//! with the id in hex without leading zeros; the collection and the member
//! objects end in a newline (Go's `json.Encoder`), the `{"message":..}`
//! errors do not (`json.Marshal`). Errors etcd has no name for are a 500
//! `Internal Server Error`, as etcd's `WriteError` answers them.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use keel_node::NodeError;
use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_v2store::write_json_string;

use super::form::{self, MAX_FORM_BYTES};
use super::{cluster_id_header, go_http_error, header_string, read_body, respond, urls, BodyError, JSON, TEXT, V2};

const MEMBERS_PREFIX: &str = "/v2/members";

/// The members handler; `path` is the decoded, clean URL path.
pub(super) async fn members(v2: &V2, request: Request, path: &str) -> Response {
    let method = request.method().clone();
    if !(method == Method::GET || method == Method::POST || method == Method::DELETE || method == Method::PUT) {
        return super::method_not_allowed("GET,POST,DELETE,PUT");
    }
    let cluster_id = cluster_id_header(v2.member.cluster_id());
    let cluster_id = cluster_id.as_str();
    let rest = trim_prefix(path);
    if method == Method::GET {
        return match rest {
            "" => list(v2, cluster_id).await,
            "leader" => leader(v2, cluster_id).await,
            _ => message(StatusCode::NOT_FOUND, Some(cluster_id), "Not found"),
        };
    }
    if method == Method::POST {
        let peer_urls = match peer_urls_of(request, cluster_id).await {
            Ok(urls) => urls,
            Err(refusal) => return refusal,
        };
        return match v2.member.member_add(peer_urls, false).await {
            Ok((added, _)) => member_reply(StatusCode::CREATED, cluster_id, &added),
            Err(NodeError::PeerUrlExists) => message(StatusCode::CONFLICT, Some(cluster_id), PEER_URL_EXISTS),
            Err(err @ NodeError::BadPeerUrls) => message(StatusCode::BAD_REQUEST, Some(cluster_id), &err.to_string()),
            Err(err) => internal_error(cluster_id, "adding a member", &err),
        };
    }
    let id = match member_id(rest, cluster_id) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    if method == Method::DELETE {
        return match v2.member.member_remove(id).await {
            Ok(_) => no_content(cluster_id),
            Err(NodeError::MemberRemoved) => {
                message(StatusCode::GONE, Some(cluster_id), &format!("Member permanently removed: {id:x}"))
            }
            Err(NodeError::MemberNotFound) => no_such_member(cluster_id, id),
            Err(err) => internal_error(cluster_id, "removing a member", &err),
        };
    }
    let peer_urls = match peer_urls_of(request, cluster_id).await {
        Ok(urls) => urls,
        Err(refusal) => return refusal,
    };
    match v2.member.member_update(id, peer_urls).await {
        Ok(_) => no_content(cluster_id),
        Err(NodeError::PeerUrlExists) => message(StatusCode::CONFLICT, Some(cluster_id), PEER_URL_EXISTS),
        Err(NodeError::MemberNotFound) => no_such_member(cluster_id, id),
        Err(err @ NodeError::BadPeerUrls) => message(StatusCode::BAD_REQUEST, Some(cluster_id), &err.to_string()),
        // etcd answers an update of a removed member this way too.
        Err(err) => internal_error(cluster_id, "updating a member", &err),
    }
}

const PEER_URL_EXISTS: &str = "membership: peerURL exists";

/// etcd's `trimPrefix`: the path after `/v2/members` and one slash.
fn trim_prefix(path: &str) -> &str {
    let rest = path.strip_prefix(MEMBERS_PREFIX).unwrap_or(path);
    rest.strip_prefix('/').unwrap_or(rest)
}

/// etcd's `getID`: a hex member id; none is a 405, a bad one a 404.
#[allow(clippy::result_large_err)]
fn member_id(rest: &str, cluster_id: &str) -> Result<u64, Response> {
    if rest.is_empty() {
        return Err(go_http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", None, Some(cluster_id)));
    }
    form::parse_uint(rest, 16)
        .ok_or_else(|| message(StatusCode::NOT_FOUND, Some(cluster_id), &format!("No such member: {rest}")))
}

async fn list(v2: &V2, cluster_id: &str) -> Response {
    let mut members = match v2.member.member_list(false).await {
        Ok(members) => members,
        Err(err) => return internal_error(cluster_id, "listing members", &err),
    };
    members.sort_by_key(|m| m.id);
    let mut body = String::from("{\"members\":[");
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        member_json(&mut body, member);
    }
    body.push_str("]}\n");
    respond(StatusCode::OK, &[("content-type", JSON), ("x-etcd-cluster-id", cluster_id)], super::go_body(body))
}

async fn leader(v2: &V2, cluster_id: &str) -> Response {
    let during_election = || message(StatusCode::SERVICE_UNAVAILABLE, Some(cluster_id), "During election");
    let leader = v2.member.leader();
    if leader == 0 {
        return during_election();
    }
    match v2.member.member_list(false).await {
        Ok(members) => match members.iter().find(|m| m.id == leader) {
            Some(member) => member_reply(StatusCode::OK, cluster_id, member),
            // A leader not (yet) in this member's list: as good as none.
            None => during_election(),
        },
        Err(err) => internal_error(cluster_id, "listing members", &err),
    }
}

/// The peer URLs of a POST or PUT body, checked as etcd's
/// `unmarshalRequest` checks them.
#[allow(clippy::result_large_err)]
async fn peer_urls_of(request: Request, cluster_id: &str) -> Result<Vec<String>, Response> {
    let content_type = header_string(request.headers(), header::CONTENT_TYPE).unwrap_or_default();
    if let Err(media) = json_content_type(&content_type) {
        let refusal = format!("Bad Content-Type {media}, accept application/json");
        return Err(message(StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(cluster_id), &refusal));
    }
    let body = match read_body(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(message(StatusCode::BAD_REQUEST, Some(cluster_id), "http: request body too large"))
        }
        Err(BodyError::Read(err)) => return Err(message(StatusCode::BAD_REQUEST, Some(cluster_id), &err)),
    };
    parse_peer_urls(&body)
        .and_then(|given| urls::new_urls(&given))
        .map_err(|err| message(StatusCode::BAD_REQUEST, Some(cluster_id), &err))
}

/// etcd's Content-Type check: the media type before any `;`, trimmed and
/// lower-cased only when there is a `;` (so Go quotes it back so).
fn json_content_type(content_type: &str) -> Result<(), String> {
    let media = match content_type.split_once(';') {
        Some((media, _)) => media.trim().to_lowercase(),
        None => content_type.to_owned(),
    };
    if media == "application/json" {
        Ok(())
    } else {
        Err(media)
    }
}

/// `{"peerURLs":[...]}` as Go's `encoding/json` reads it into a struct:
/// the field name matched case-insensitively, unknown fields and `null`
/// ignored. Errors are Go's texts where they are common (an empty or
/// truncated body), serde's otherwise.
fn parse_peer_urls(body: &[u8]) -> Result<Vec<String>, String> {
    use serde_json::Value;
    const STRUCT: &str = "struct { PeerURLs []string \"json:\\\"peerURLs\\\"\" }";
    let value: Value = serde_json::from_slice(body).map_err(|err| match err.classify() {
        serde_json::error::Category::Eof => "unexpected end of JSON input".to_owned(),
        _ => err.to_string(),
    })?;
    let object = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(object) => object,
        other => return Err(format!("json: cannot unmarshal {} into Go value of type {STRUCT}", json_kind(&other))),
    };
    let field = object
        .get("peerURLs")
        .or_else(|| object.iter().find(|(name, _)| name.eq_ignore_ascii_case("peerURLs")).map(|(_, v)| v));
    match field {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(url) => Ok(url.clone()),
                Value::Null => Ok(String::new()),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go struct field .peerURLs of type string",
                    json_kind(other)
                )),
            })
            .collect(),
        Some(other) => {
            Err(format!("json: cannot unmarshal {} into Go struct field .peerURLs of type []string", json_kind(other)))
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One member as etcd's `httptypes.Member`.
fn member_json(out: &mut String, member: &EtcdMember) {
    out.push_str(&format!("{{\"id\":\"{:x}\",\"name\":", member.id));
    write_json_string(out, &member.name);
    out.push_str(",\"peerURLs\":");
    string_array(out, &member.peer_ur_ls);
    out.push_str(",\"clientURLs\":");
    string_array(out, &member.client_ur_ls);
    out.push('}');
}

fn string_array(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, item);
    }
    out.push(']');
}

fn member_reply(status: StatusCode, cluster_id: &str, member: &EtcdMember) -> Response {
    let mut body = String::new();
    member_json(&mut body, member);
    body.push('\n');
    respond(status, &[("content-type", JSON), ("x-etcd-cluster-id", cluster_id)], Body::from(body))
}

fn no_content(cluster_id: &str) -> Response {
    respond(StatusCode::NO_CONTENT, &[("x-etcd-cluster-id", cluster_id)], Body::empty())
}

fn no_such_member(cluster_id: &str, id: u64) -> Response {
    message(StatusCode::NOT_FOUND, Some(cluster_id), &format!("No such member: {id:x}"))
}

fn internal_error(cluster_id: &str, doing: &str, err: &NodeError) -> Response {
    tracing::warn!(%err, "v2 members API: {doing} failed");
    message(StatusCode::INTERNAL_SERVER_ERROR, Some(cluster_id), "Internal Server Error")
}

/// etcd's `HTTPError`: `{"message":...}` without a newline.
pub(super) fn message(status: StatusCode, cluster_id: Option<&str>, text: &str) -> Response {
    let mut body = String::from("{\"message\":");
    write_json_string(&mut body, text);
    body.push('}');
    let mut headers: Vec<(&'static str, &str)> = vec![("content-type", JSON)];
    if let Some(cluster_id) = cluster_id {
        headers.push(("x-etcd-cluster-id", cluster_id));
    }
    respond(status, &headers, Body::from(body))
}

/// `/v2/machines`: every member's client URLs, sorted, joined by `", "`,
/// as plain text without a newline.
pub(super) async fn machines(v2: &V2, method: &Method) -> Response {
    if !(method == Method::GET || method == Method::HEAD) {
        return super::method_not_allowed("GET,HEAD");
    }
    let members = match v2.member.member_list(false).await {
        Ok(members) => members,
        Err(err) => {
            tracing::warn!(%err, "v2 machines: listing members failed");
            return go_http_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", None, None);
        }
    };
    let mut client_urls: Vec<&str> = members.iter().flat_map(|m| m.client_ur_ls.iter().map(String::as_str)).collect();
    client_urls.sort_unstable();
    respond(StatusCode::OK, &[("content-type", TEXT)], Body::from(client_urls.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_json_is_gos() {
        let member = EtcdMember {
            id: 0x8cced54924db0ef,
            name: "n1".into(),
            peer_ur_ls: vec!["http://127.0.0.1:41380".into()],
            client_ur_ls: vec!["http://127.0.0.1:41390".into()],
            ..Default::default()
        };
        let mut out = String::new();
        member_json(&mut out, &member);
        assert_eq!(
            out,
            r#"{"id":"8cced54924db0ef","name":"n1","peerURLs":["http://127.0.0.1:41380"],"clientURLs":["http://127.0.0.1:41390"]}"#
        );
        let added = EtcdMember { id: 0x1902bf70f248d0c7, peer_ur_ls: vec!["http://a:1".into()], ..Default::default() };
        let mut out = String::new();
        member_json(&mut out, &added);
        assert_eq!(out, r#"{"id":"1902bf70f248d0c7","name":"","peerURLs":["http://a:1"],"clientURLs":[]}"#);
    }

    #[test]
    fn member_paths() {
        assert_eq!(trim_prefix("/v2/members"), "");
        assert_eq!(trim_prefix("/v2/members/"), "");
        assert_eq!(trim_prefix("/v2/members/leader"), "leader");
        assert_eq!(trim_prefix("/v2/members/a/b"), "a/b");
        assert_eq!(member_id("1902bf70f248d0c7", "c").ok(), Some(0x1902bf70f248d0c7));
        assert_eq!(member_id("01234", "c").ok(), Some(0x1234));
        assert_eq!(member_id("zzzz", "c").unwrap_err().status(), StatusCode::NOT_FOUND);
        assert_eq!(member_id("", "c").unwrap_err().status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn content_types() {
        assert_eq!(json_content_type("application/json"), Ok(()));
        assert_eq!(json_content_type("Application/JSON ; charset=utf-8"), Ok(()));
        assert_eq!(
            json_content_type("application/x-www-form-urlencoded"),
            Err("application/x-www-form-urlencoded".to_owned())
        );
        // Without a `;`, Go compares the header as it is.
        assert_eq!(json_content_type("Application/JSON"), Err("Application/JSON".to_owned()));
        assert_eq!(json_content_type(""), Err(String::new()));
    }

    #[test]
    fn peer_url_bodies() {
        assert_eq!(parse_peer_urls(br#"{"peerURLs":["http://a:1"]}"#).unwrap(), ["http://a:1"]);
        assert_eq!(parse_peer_urls(br#"{"PEERURLS":["http://a:1"],"x":1}"#).unwrap(), ["http://a:1"]);
        assert!(parse_peer_urls(b"{}").unwrap().is_empty());
        assert!(parse_peer_urls(b"null").unwrap().is_empty());
        assert_eq!(parse_peer_urls(br#"{"peerURLs":"#).unwrap_err(), "unexpected end of JSON input");
        assert_eq!(parse_peer_urls(b"").unwrap_err(), "unexpected end of JSON input");
        assert!(parse_peer_urls(br#"{"peerURLs":[1]}"#).unwrap_err().contains("cannot unmarshal number"));
        assert!(parse_peer_urls(br#"[]"#).unwrap_err().contains("cannot unmarshal array"));
    }
}
