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
//! A check is exactly one of `http` (a GET of an `http://` or `https://`
//! URL; 2xx passes), `tcp` (a connect to `host:port` passes), `grpc`
//! (`host:port` or `host:port/service`: `grpc.health.v1` answering SERVING
//! passes; over TLS with `grpc_use_tls`) or `ttl` (passes while the service
//! has called `PUT /v1/agent/check/pass/<id>` within the TTL). TLS checks
//! verify the service's certificate against the system's roots unless
//! `tls_skip_verify`. Durations are Go's (`500ms`, `5s`). `id` defaults to
//! `name`.
//!
//! Consul's agent service definitions are read too: its capitalised field
//! names (`Name`, `ID`, `Address` with `Port`, `Tags`, `Meta`, and `Check`
//! with `HTTP`, `TCP`, `GRPC`, `GRPCUseTLS`, `TLSSkipVerify`, `TTL`,
//! `Interval`, `Timeout`).

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
    #[serde(default, alias = "Name")]
    name: String,
    #[serde(default, alias = "ID")]
    id: String,
    #[serde(default, alias = "Address")]
    address: String,
    /// Consul gives the port apart from the address.
    #[serde(alias = "Port")]
    port: Option<u16>,
    #[serde(default, alias = "Tags")]
    tags: Vec<String>,
    #[serde(default, alias = "Meta")]
    metadata: BTreeMap<String, String>,
    #[serde(alias = "Check")]
    check: Option<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(alias = "HTTP")]
    http: Option<String>,
    #[serde(alias = "TCP")]
    tcp: Option<String>,
    #[serde(alias = "GRPC")]
    grpc: Option<String>,
    #[serde(default, alias = "GRPCUseTLS")]
    grpc_use_tls: bool,
    #[serde(default, alias = "TLSSkipVerify")]
    tls_skip_verify: bool,
    #[serde(alias = "TTL")]
    ttl: Option<String>,
    #[serde(alias = "Interval")]
    interval: Option<String>,
    #[serde(alias = "Timeout")]
    timeout: Option<String>,
    // Consul's descriptive fields, accepted and not used.
    #[serde(default, rename = "Name")]
    _name: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "CheckID")]
    _check_id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "Notes")]
    _notes: Option<serde::de::IgnoredAny>,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) check: Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Http {
        url: HttpUrl,
        tls_skip_verify: bool,
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
        tls: bool,
        tls_skip_verify: bool,
        interval: Duration,
        timeout: Duration,
    },
    Ttl {
        ttl: Duration,
    },
}

/// An `http://` or `https://` `host:port/path` URL, split for an
/// HTTP/1.1 GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub(crate) tls: bool,
    /// The host alone: the name a TLS certificate must be valid for.
    pub(crate) host: String,
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
        let address = match raw.port {
            None => raw.address.trim().to_owned(),
            Some(port) => {
                let host = raw.address.trim();
                match host.contains(':') && !host.starts_with('[') {
                    true => format!("[{host}]:{port}"),
                    false => format!("{host}:{port}"),
                }
            }
        };
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
        let (raw_tls_skip_verify, raw_grpc_use_tls) = (check.tls_skip_verify, check.grpc_use_tls);
        let check = match (check.http, check.tcp, check.grpc, check.ttl) {
            (Some(url), None, None, None) => Check::Http {
                url: parse_http_url(&url)?,
                tls_skip_verify: check.tls_skip_verify,
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
                    tls: check.grpc_use_tls,
                    tls_skip_verify: check.tls_skip_verify,
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
        let tls_check =
            matches!(check, Check::Http { url: HttpUrl { tls: true, .. }, .. } | Check::Grpc { tls: true, .. });
        if !tls_check && raw_tls_skip_verify {
            return Err(invalid("tls_skip_verify is for https:// and grpc_use_tls checks"));
        }
        if raw_grpc_use_tls && !matches!(check, Check::Grpc { .. }) {
            return Err(invalid("grpc_use_tls is for grpc checks"));
        }
        Ok(Service { name, id, address, tags: raw.tags, metadata: raw.metadata, check })
    }

    /// The registration in the schema it was written in, defaults filled.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ms = |d: &Duration| format!("{}ms", d.as_millis());
        let check = match &self.check {
            Check::Http { url, tls_skip_verify, interval, timeout } => {
                let mut check =
                    serde_json::json!({ "http": url.text, "interval": ms(interval), "timeout": ms(timeout) });
                if *tls_skip_verify {
                    check["tls_skip_verify"] = true.into();
                }
                check
            }
            Check::Tcp { address, interval, timeout } => {
                serde_json::json!({ "tcp": address, "interval": ms(interval), "timeout": ms(timeout) })
            }
            Check::Grpc { address, service, tls, tls_skip_verify, interval, timeout } => {
                let target = if service.is_empty() { address.clone() } else { format!("{address}/{service}") };
                let mut check = serde_json::json!({ "grpc": target, "interval": ms(interval), "timeout": ms(timeout) });
                if *tls {
                    check["grpc_use_tls"] = true.into();
                }
                if *tls_skip_verify {
                    check["tls_skip_verify"] = true.into();
                }
                check
            }
            Check::Ttl { ttl } => serde_json::json!({ "ttl": ms(ttl) }),
        };
        let mut json = serde_json::json!({
            "name": self.name, "id": self.id, "address": self.address, "metadata": self.metadata, "check": check,
        });
        if !self.tags.is_empty() {
            json["tags"] = self.tags.clone().into();
        }
        json
    }

    /// What the key holds (`tags` only when there are some).
    pub(crate) fn value(&self) -> String {
        let mut value = serde_json::json!({ "address": self.address, "metadata": self.metadata });
        if !self.tags.is_empty() {
            value["tags"] = self.tags.clone().into();
        }
        value.to_string()
    }
}

fn parse_http_url(text: &str) -> Result<HttpUrl, Invalid> {
    let bad = |why: &str| invalid(format!("http check url {text:?}: {why}"));
    let (tls, rest) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad("only http:// and https:// URLs are supported")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) || path.contains([' ', '\r', '\n']) {
        return Err(bad("not host[:port]/path"));
    }
    // `[v6]` or `[v6]:port`, else `host` or `host:port`.
    let (host, port) = match authority.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((host, "")) => (host, None),
        Some((host, port)) => (host, Some(port.strip_prefix(':').ok_or_else(|| bad("not host[:port]/path"))?)),
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let default_port = if tls { 443 } else { 80 };
    let authority = match port {
        Some(port) if !host.is_empty() && port.parse::<u16>().is_ok() => authority.to_owned(),
        Some(_) => return Err(bad("bad port")),
        None => format!("{authority}:{default_port}"),
    };
    let host = host.to_owned();
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Ok(HttpUrl { tls, host, authority, path, text: text.to_owned() })
}

/// The `*.json` files of `dir`, in name order.
pub(crate) fn json_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Every `*.json` file of `dir`, in name order; the first bad one stops
/// the start, named.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Service>, String> {
    let paths = json_files(dir).map_err(|e| format!("--service-config-dir {}: {e}", dir.display()))?;
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
        let Check::Http { url, interval, timeout, .. } = &web.check else { panic!("{web:?}") };
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
                tls: false,
                tls_skip_verify: false,
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
    fn tls_checks_and_consuls_field_names() {
        let web = Service::parse(
            br#"{"name":"web","address":"x","check":{"http":"https://[::1]/health","tls_skip_verify":true}}"#,
        )
        .unwrap();
        let Check::Http { url, tls_skip_verify: true, .. } = &web.check else { panic!("{web:?}") };
        assert_eq!((url.tls, url.host.as_str(), url.authority.as_str()), (true, "::1", "[::1]:443"));
        assert_eq!(web.to_json()["check"]["tls_skip_verify"], true);
        let api =
            Service::parse(br#"{"name":"api","address":"x","check":{"grpc":"h:1","grpc_use_tls":true}}"#).unwrap();
        assert!(matches!(api.check, Check::Grpc { tls: true, tls_skip_verify: false, .. }), "{api:?}");
        assert_eq!(Service::parse(&serde_json::to_vec(&api.to_json()).unwrap()).unwrap(), api);

        // An agent service definition as Consul's documentation writes it.
        let consul = Service::parse(
            br#"{"ID":"redis1","Name":"redis","Tags":["primary"],"Address":"10.0.0.9","Port":6379,
                 "Meta":{"version":"7"},
                 "Check":{"Name":"redis alive","TCP":"10.0.0.9:6379","Interval":"10s","Timeout":"1s"}}"#,
        )
        .unwrap();
        assert_eq!(
            (consul.id.as_str(), consul.name.as_str(), consul.address.as_str()),
            ("redis1", "redis", "10.0.0.9:6379")
        );
        assert_eq!(
            consul.check,
            Check::Tcp {
                address: "10.0.0.9:6379".into(),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1)
            }
        );
        assert_eq!(consul.value(), r#"{"address":"10.0.0.9:6379","metadata":{"version":"7"},"tags":["primary"]}"#);
        let v6 = Service::parse(br#"{"Name":"a","Address":"fd00::1","Port":80,"Check":{"TTL":"5s"}}"#).unwrap();
        assert_eq!(v6.address, "[fd00::1]:80");
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
            (r#"{"name":"a","address":"x","check":{"http":"ftp://h/"}}"#, "only http:// and https://"),
            (r#"{"name":"a","address":"x","check":{"http":"not a url"}}"#, "only http:// and https://"),
            (r#"{"name":"a","address":"x","check":{"tcp":"h:1","tls_skip_verify":true}}"#, "tls_skip_verify is for"),
            (
                r#"{"name":"a","address":"x","check":{"http":"http://h/","tls_skip_verify":true}}"#,
                "tls_skip_verify is for",
            ),
            (r#"{"name":"a","address":"x","check":{"http":"http://h/","grpc_use_tls":true}}"#, "grpc_use_tls is for"),
            (r#"{"Name":"a","Address":"x","Port":99999,"Check":{"TTL":"1s"}}"#, "invalid JSON"),
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
