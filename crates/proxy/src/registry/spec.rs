//! A service registration as users write it (a JSON body of
//! `PUT /v1/agent/service/register`, or one file of
//! `--service-config-dir`), validated once into a [`Service`].
//!
//! ```json
//! {"name": "web", "id": "web1", "address": "10.0.0.5:8080",
//!  "metadata": {"version": "1.2"},
//!  "check": {"http": "http://127.0.0.1:8080/health", "interval": "5s", "timeout": "1s"}}
//! ```
//!
//! A check is exactly one of `http` (a GET; 2xx passes), `tcp` (a connect
//! to `host:port` passes), `grpc` (`host:port` or `host:port/service`:
//! `grpc.health.v1` answering SERVING passes) or `ttl` (passes while the
//! service has called
//! `PUT /v1/agent/check/pass/<id>` within the TTL). Durations are Go's
//! (`500ms`, `5s`). `id` defaults to `name`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::parse_duration;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    name: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    check: Option<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    http: Option<String>,
    tcp: Option<String>,
    grpc: Option<String>,
    ttl: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) check: Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Http {
        url: HttpUrl,
        interval: Duration,
        timeout: Duration,
    },
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
    /// `service`: the name asked of `grpc.health.v1`; empty: the server.
    Grpc {
        address: String,
        service: String,
        interval: Duration,
        timeout: Duration,
    },
    Ttl {
        ttl: Duration,
    },
}

/// An `http://host:port/path` URL, split for a plain HTTP/1.1 GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) text: String,
}

/// Why a registration is refused: the message the client (400) or the
/// operator (start-up error) reads.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(pub(crate) String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

impl Service {
    pub(crate) fn parse(json: &[u8]) -> Result<Service, Invalid> {
        let raw: RawService = serde_json::from_slice(json).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("missing service name (\"name\")"));
        }
        let id = if raw.id.trim().is_empty() { name.clone() } else { raw.id.trim().to_owned() };
        for (what, value) in [("name", &name), ("id", &id)] {
            if value.contains('/') {
                return Err(invalid(format!("service {what} {value:?} must not contain '/'")));
            }
        }
        if raw.address.trim().is_empty() {
            return Err(invalid("missing service address (\"address\")"));
        }
        let Some(check) = raw.check else {
            return Err(invalid("missing check (\"check\": one of \"http\", \"tcp\", \"grpc\", \"ttl\")"));
        };
        let duration = |field: &str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => match parse_duration(text) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid(format!("check {field} must be more than zero"))),
                Err(why) => Err(invalid(format!("check {field} {text:?}: {why}"))),
            },
        };
        let host_port = |address: &str| {
            address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        let check = match (check.http, check.tcp, check.grpc, check.ttl) {
            (Some(url), None, None, None) => Check::Http {
                url: parse_http_url(&url)?,
                interval: duration("interval", &check.interval, DEFAULT_INTERVAL)?,
                timeout: duration("timeout", &check.timeout, DEFAULT_TIMEOUT)?,
            },
            (None, Some(address), None, None) => {
                if !host_port(&address) {
                    return Err(invalid(format!("tcp check address {address:?} is not host:port")));
                }
                Check::Tcp {
                    address,
                    interval: duration("interval", &check.interval, DEFAULT_INTERVAL)?,
                    timeout: duration("timeout", &check.timeout, DEFAULT_TIMEOUT)?,
                }
            }
            (None, None, Some(target), None) => {
                let (address, service) = target.split_once('/').unwrap_or((&target, ""));
                if !host_port(address) {
                    return Err(invalid(format!("grpc check {target:?} is not host:port or host:port/service")));
                }
                Check::Grpc {
                    address: address.to_owned(),
                    service: service.to_owned(),
                    interval: duration("interval", &check.interval, DEFAULT_INTERVAL)?,
                    timeout: duration("timeout", &check.timeout, DEFAULT_TIMEOUT)?,
                }
            }
            (None, None, None, Some(ttl)) => {
                if check.interval.is_some() || check.timeout.is_some() {
                    return Err(invalid("a ttl check takes no interval or timeout"));
                }
                Check::Ttl { ttl: duration("ttl", &Some(ttl), Duration::ZERO)? }
            }
            _ => return Err(invalid("check must have exactly one of \"http\", \"tcp\", \"grpc\", \"ttl\"")),
        };
        Ok(Service { name, id, address: raw.address.trim().to_owned(), metadata: raw.metadata, check })
    }

    /// The registration in the schema it was written in, defaults filled.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ms = |d: &Duration| format!("{}ms", d.as_millis());
        let check = match &self.check {
            Check::Http { url, interval, timeout } => {
                serde_json::json!({ "http": url.text, "interval": ms(interval), "timeout": ms(timeout) })
            }
            Check::Tcp { address, interval, timeout } => {
                serde_json::json!({ "tcp": address, "interval": ms(interval), "timeout": ms(timeout) })
            }
            Check::Grpc { address, service, interval, timeout } => {
                let target = if service.is_empty() { address.clone() } else { format!("{address}/{service}") };
                serde_json::json!({ "grpc": target, "interval": ms(interval), "timeout": ms(timeout) })
            }
            Check::Ttl { ttl } => serde_json::json!({ "ttl": ms(ttl) }),
        };
        serde_json::json!({
            "name": self.name, "id": self.id, "address": self.address, "metadata": self.metadata, "check": check,
        })
    }

    /// What the key holds.
    pub(crate) fn value(&self) -> String {
        serde_json::json!({ "address": self.address, "metadata": self.metadata }).to_string()
    }
}

fn parse_http_url(text: &str) -> Result<HttpUrl, Invalid> {
    let bad = |why: &str| invalid(format!("http check url {text:?}: {why}"));
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(bad("only http:// URLs are supported"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) || path.contains([' ', '\r', '\n']) {
        return Err(bad("not host[:port]/path"));
    }
    let authority = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => authority.to_owned(),
        Some(_) => return Err(bad("bad port")),
        None => format!("{authority}:80"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Ok(HttpUrl { authority, path, text: text.to_owned() })
}

/// Every `*.json` file of `dir`, in name order; the first bad one stops
/// the start, named.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Service>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--service-config-dir {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let mut services: Vec<Service> = Vec::new();
    for path in paths {
        let text = std::fs::read(&path).map_err(|e| format!("service file {}: {e}", path.display()))?;
        let service = Service::parse(&text).map_err(|e| format!("service file {}: {e}", path.display()))?;
        if services.iter().any(|other| other.id == service.id) {
            return Err(format!("service file {}: service id {:?} registered twice", path.display(), service.id));
        }
        services.push(service);
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_registrations() {
        let web = Service::parse(
            br#"{"name":"web","address":"10.0.0.5:80","metadata":{"v":"1"},
                 "check":{"http":"http://127.0.0.1:8080/health?x=1","interval":"500ms","timeout":"1s"}}"#,
        )
        .unwrap();
        assert_eq!(web.id, "web");
        let Check::Http { url, interval, timeout } = &web.check else { panic!("{web:?}") };
        assert_eq!((url.authority.as_str(), url.path.as_str()), ("127.0.0.1:8080", "/health?x=1"));
        assert_eq!((*interval, *timeout), (Duration::from_millis(500), Duration::from_secs(1)));
        assert_eq!(web.value(), r#"{"address":"10.0.0.5:80","metadata":{"v":"1"}}"#);

        let db = Service::parse(br#"{"name":"db","id":"db2","address":"h:5432","check":{"tcp":"h:5432"}}"#).unwrap();
        assert_eq!(
            db.check,
            Check::Tcp { address: "h:5432".into(), interval: DEFAULT_INTERVAL, timeout: DEFAULT_TIMEOUT }
        );
        let api = Service::parse(br#"{"name":"api","address":"x","check":{"grpc":"h:50051/api.v1.Api"}}"#).unwrap();
        assert_eq!(
            api.check,
            Check::Grpc {
                address: "h:50051".into(),
                service: "api.v1.Api".into(),
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT
            }
        );
        assert_eq!(api.to_json()["check"]["grpc"], "h:50051/api.v1.Api");
        let job = Service::parse(br#"{"name":"job","address":"x","check":{"ttl":"30s"}}"#).unwrap();
        assert_eq!(job.check, Check::Ttl { ttl: Duration::from_secs(30) });
        let bare = Service::parse(br#"{"name":"a","address":"x","check":{"http":"http://h"}}"#).unwrap();
        let Check::Http { url, .. } = bare.check else { panic!() };
        assert_eq!((url.authority.as_str(), url.path.as_str()), ("h:80", "/"));
    }

    #[test]
    fn bad_registrations_say_why() {
        let cases: &[(&str, &str)] = &[
            (r#"{"address":"x","check":{"ttl":"1s"}}"#, "missing service name"),
            (r#"{"name":"a","check":{"ttl":"1s"}}"#, "missing service address"),
            (r#"{"name":"a","address":"x"}"#, "missing check"),
            (r#"{"name":"a","address":"x","check":{"script":"true"}}"#, "unknown field `script`"),
            (r#"{"name":"a","address":"x","check":{"grpc":"h/svc"}}"#, "not host:port or host:port/service"),
            (r#"{"name":"a","address":"x","check":{}}"#, "exactly one of"),
            (r#"{"name":"a","address":"x","check":{"ttl":"1s","tcp":"h:1"}}"#, "exactly one of"),
            (r#"{"name":"a","address":"x","check":{"http":"https://h/"}}"#, "only http://"),
            (r#"{"name":"a","address":"x","check":{"http":"not a url"}}"#, "only http://"),
            (r#"{"name":"a","address":"x","check":{"http":"http://h:99999/"}}"#, "bad port"),
            (r#"{"name":"a","address":"x","check":{"ttl":"0"}}"#, "ttl must be more than zero"),
            (r#"{"name":"a","address":"x","check":{"ttl":"5"}}"#, "missing unit"),
            (r#"{"name":"a","address":"x","check":{"tcp":"nohost"}}"#, "not host:port"),
            (r#"{"name":"a/b","address":"x","check":{"ttl":"1s"}}"#, "must not contain '/'"),
            (r#"{"name":"a","address":"x","check":{"ttl":"1s"},"extra":1}"#, "unknown field `extra`"),
            (r#"{"name":"a","address":"x","check":{"ttl":"1s","interval":"1s"}}"#, "takes no interval"),
            ("not json", "invalid JSON"),
        ];
        for (json, want) in cases {
            let err = Service::parse(json.as_bytes()).unwrap_err();
            assert!(err.0.contains(want), "{json}: {err} lacks {want:?}");
        }
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = std::env::temp_dir().join(format!("keel-proxy-services-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.json"), r#"{"name":"a","address":"x","check":{"ttl":"1s"}}"#).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        assert_eq!(load_dir(&dir).unwrap().len(), 1);
        std::fs::write(dir.join("b.json"), r#"{"name":"b","check":{"ttl":"1s"}}"#).unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(err.contains("b.json") && err.contains("missing service address"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
