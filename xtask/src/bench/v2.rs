//! The put and point-read workloads over etcd 3.4's v2 keys API (servers
//! started with `--enable-v2`): each client keeps one HTTP/1.1 connection;
//! a put becomes a set (`PUT /v2/keys/<key>` with the form body
//! `value=...`), a one-key range a plain GET (a local read, as v2 clients
//! send it unless they ask for `quorum=true`). The keys and values are the
//! gRPC runs' own, from the same [`Plan`].

use anyhow::{bail, Context, Result};

use super::http::{judge, Conn};
use super::load::{drive, Outcome};
use super::workload::{Plan, Request, Workload};

/// The server flag that turns the v2 API on; both systems take this form
/// (etcd's flag is a plain bool, so `--enable-v2 true` would not parse).
pub const SERVER_FLAG: &str = "--enable-v2=true";

/// Put before every key, so that a path segment is never empty, `.` or `..`
/// (which the servers' path cleaning would redirect), whatever the key.
pub const KEY_PREFIX: &str = "bench-";

const FORM: &str = "application/x-www-form-urlencoded";

/// A set answers 201 for a new key and 200 for a replaced one; a GET, 200.
const SUCCESS: [u16; 2] = [200, 201];

/// One v2 request, ready for [`Conn::request`].
#[derive(Debug, PartialEq, Eq)]
pub struct V2Request {
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl V2Request {
    /// The v2 form of a generated request: puts are sets, single-key ranges
    /// GETs; v2 has no ranges or transactions, so anything else is refused.
    pub fn of(request: &Request) -> Result<V2Request, String> {
        match request {
            Request::Put(put) => {
                let mut body = b"value=".to_vec();
                body.extend_from_slice(url_encode(&put.value).as_bytes());
                Ok(V2Request { method: "PUT", path: key_path(&put.key), content_type: Some(FORM), body })
            }
            Request::Range(range) if range.range_end.is_empty() && !range.count_only => {
                Ok(V2Request { method: "GET", path: key_path(&range.key), content_type: None, body: Vec::new() })
            }
            Request::Range(_) => Err("the v2 API reads one key at a time, not a range".to_owned()),
            Request::Txn(_) => Err("the v2 API has no transactions".to_owned()),
        }
    }
}

/// `/v2/keys/<prefix><key>`, the key escaped: decimal keys go through as
/// they are, and any other byte cannot split the path or end it early.
pub fn key_path(key: &[u8]) -> String {
    format!("/v2/keys/{KEY_PREFIX}{}", url_encode(key))
}

/// Percent-encodes every byte but RFC 3986's unreserved ones (letters,
/// digits, `-`, `.`, `_`, `~`): the result means the same bytes in a path
/// segment and in a form body (where a raw `+` would be a space and a raw
/// `&` or `=` would split the field).
pub fn url_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Runs the put or point-range `plan` through the v2 keys API of
/// `endpoints` (one connection per client, spread over the endpoints in
/// turn).
pub async fn run(endpoints: &[String], plan: &Plan) -> Result<Outcome> {
    if endpoints.is_empty() {
        bail!("no endpoints");
    }
    // Refuse a plan v2 cannot express before any connection is made, rather
    // than count every one of its requests as an error.
    if let Workload::Range { end, count_only, .. } = &plan.workload {
        if !end.is_empty() || *count_only {
            bail!("the v2 workloads read one key per request, not a range");
        }
    }
    if matches!(plan.workload, Workload::TxnPut { .. } | Workload::TxnMixed { .. }) {
        bail!("the v2 API has no transactions");
    }
    let mut conns = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        conns.push(Conn::open(&endpoints[client % endpoints.len()]).await?);
    }
    drive(plan, conns, |conn: &mut Conn, request| {
        Box::pin(async move {
            let v2 = V2Request::of(&request).map_err(tonic::Status::invalid_argument)?;
            judge(conn.request(v2.method, &v2.path, v2.content_type, &v2.body).await, &SUCCESS)
        })
    })
    .await
}

/// Sets keys `0..count` once each through the v2 API (untimed set-up, so
/// GETs find data: the v2 and v3 keyspaces are separate, so the gRPC
/// prefill would leave nothing to read).
pub async fn prefill(endpoints: &[String], count: usize, key_size: usize, val_size: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let clients = count.min(64);
    let plan = Plan {
        workload: Workload::Put { key_space: count, sequential: true },
        total: count,
        clients,
        conns: clients,
        key_size,
        val_size,
    };
    let outcome = run(endpoints, &plan).await.context("v2 prefill")?;
    if let Some(error) = outcome.first_error {
        bail!("v2 prefill: {} of {count} sets failed, first: {error}", outcome.writes.errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{PutRequest, RangeRequest, TxnRequest};

    use super::super::workload::{key, Class, Generator, Rng};
    use super::*;

    #[test]
    fn url_encoding_keeps_unreserved_bytes_and_escapes_the_rest() {
        assert_eq!(url_encode(b""), "");
        assert_eq!(url_encode(b"00000042"), "00000042");
        assert_eq!(url_encode(b"aZ09-._~"), "aZ09-._~");
        assert_eq!(url_encode(b"a b+c&d=e/f%"), "a%20b%2Bc%26d%3De%2Ff%25");
        assert_eq!(url_encode(&[0, 0x7f, 0x80, 0xff]), "%00%7F%80%FF");
        assert_eq!(url_encode("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn a_put_is_a_form_encoded_set() {
        let put = PutRequest { key: b"00000007".to_vec(), value: b"v v&".to_vec(), ..Default::default() };
        assert_eq!(
            V2Request::of(&Request::Put(put)),
            Ok(V2Request {
                method: "PUT",
                path: "/v2/keys/bench-00000007".to_owned(),
                content_type: Some("application/x-www-form-urlencoded"),
                body: b"value=v%20v%26".to_vec(),
            })
        );
        let empty = PutRequest { key: b"1".to_vec(), ..Default::default() };
        assert_eq!(V2Request::of(&Request::Put(empty)).unwrap().body, b"value=");
    }

    #[test]
    fn a_point_range_is_a_get_and_the_rest_is_refused() {
        let range = RangeRequest { key: b"00000000".to_vec(), ..Default::default() };
        assert_eq!(
            V2Request::of(&Request::Range(range)),
            Ok(V2Request {
                method: "GET",
                path: "/v2/keys/bench-00000000".to_owned(),
                content_type: None,
                body: Vec::new(),
            })
        );
        let span = RangeRequest { key: b"0".to_vec(), range_end: b"9".to_vec(), ..Default::default() };
        assert!(V2Request::of(&Request::Range(span)).is_err());
        let count = RangeRequest { key: b"0".to_vec(), count_only: true, ..Default::default() };
        assert!(V2Request::of(&Request::Range(count)).is_err());
        assert!(V2Request::of(&Request::Txn(TxnRequest::default())).is_err());
    }

    #[test]
    fn generated_requests_become_sets_and_gets_of_the_plans_keys() {
        let plan = |workload| Plan { workload, total: 10, clients: 1, conns: 1, key_size: 8, val_size: 3 };
        let sets = Generator::new(&plan(Workload::Put { key_space: 3, sequential: true })).unwrap();
        let mut rng = Rng::new(0);
        let paths: Vec<String> = (0..4)
            .map(|n| {
                let (class, request) = sets.request(n, &mut rng);
                assert_eq!(class, Class::Write);
                let v2 = V2Request::of(&request).unwrap();
                assert_eq!((v2.method, &v2.body[..]), ("PUT", &b"value=vvv"[..]));
                v2.path
            })
            .collect();
        assert_eq!(
            paths,
            [
                "/v2/keys/bench-00000000",
                "/v2/keys/bench-00000001",
                "/v2/keys/bench-00000002",
                "/v2/keys/bench-00000000"
            ]
        );
        let point =
            Workload::Range { key: key(0, 8), end: Vec::new(), serializable: false, limit: 0, count_only: false };
        let gets = Generator::new(&plan(point)).unwrap();
        let (class, request) = gets.request(5, &mut rng);
        assert_eq!(class, Class::Read);
        let v2 = V2Request::of(&request).unwrap();
        assert_eq!((v2.method, v2.path.as_str(), v2.body.len()), ("GET", "/v2/keys/bench-00000000", 0));
    }
}
