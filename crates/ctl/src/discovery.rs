//! `--discovery-srv DOMAIN`: the endpoints named by DNS SRV records, found
//! as etcdctl's `srv.GetClient("etcd-client", domain, serviceName)` finds
//! them: `_etcd-client-ssl[-NAME]._tcp.DOMAIN` as `https://` endpoints and
//! `_etcd-client[-NAME]._tcp.DOMAIN` as `http://` ones, each `target:port`
//! (the target keeps its final dot, as Go's resolver returns it). Either
//! lookup may fail; both failing is an error. Without
//! `--insecure-discovery`, `http://` endpoints are dropped with a warning.

use std::io::Write;

use hickory_resolver::TokioResolver;

/// The SRV service etcd's `GetSRVService` names.
pub fn srv_service(https: bool, service_name: &str) -> String {
    let mut service = String::from("etcd-client");
    if https {
        service.push_str("-ssl");
    }
    if !service_name.is_empty() {
        service.push('-');
        service.push_str(service_name);
    }
    service
}

/// One SRV answer: target (with its final dot) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Endpoints from the two lookups' outcomes, https first, as etcd orders
/// them; `Err` when both failed.
pub fn endpoints_from(
    https: Result<Vec<Target>, String>,
    http: Result<Vec<Target>, String>,
    insecure: bool,
    warnings: &mut dyn Write,
) -> Result<Vec<String>, String> {
    let (https, http) = match (https, http) {
        (Err(a), Err(b)) => return Err(format!("dns lookup errors: {a} and {b}")),
        (https, http) => (https.unwrap_or_default(), http.unwrap_or_default()),
    };
    let url = |scheme: &str, t: &Target| {
        let host = if t.host.contains(':') { format!("[{}]", t.host) } else { t.host.clone() };
        format!("{scheme}://{host}:{}", t.port)
    };
    let mut endpoints: Vec<String> = https.iter().map(|t| url("https", t)).collect();
    for target in &http {
        let endpoint = url("http", target);
        if insecure {
            endpoints.push(endpoint);
        } else {
            let _ = writeln!(
                warnings,
                "ignoring discovered insecure endpoint {}",
                crate::gostr::quote(endpoint.as_bytes())
            );
        }
    }
    Ok(endpoints)
}

/// Looks both services up with the system's resolver configuration.
pub fn discover(
    domain: &str,
    service_name: &str,
    insecure: bool,
    warnings: &mut dyn Write,
) -> Result<Vec<String>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
    let (https, http) = runtime.block_on(async {
        let resolver = TokioResolver::builder_tokio().map_err(|e| e.to_string())?.build();
        // Go's errors name the server asked: "lookup NAME on 10.0.0.2:53: ...".
        let server = hickory_resolver::system_conf::read_system_conf()
            .ok()
            .and_then(|(config, _)| config.name_servers().first().map(|ns| format!(" on {}", ns.socket_addr)))
            .unwrap_or_default();
        let lookup = |https: bool| {
            let name = format!("_{}._tcp.{}", srv_service(https, service_name), domain.trim_end_matches('.'));
            let (resolver, server) = (&resolver, &server);
            async move {
                match resolver.srv_lookup(format!("{name}.")).await {
                    Ok(answers) => {
                        let mut records: Vec<_> = answers.iter().cloned().collect();
                        // Go orders by priority, then by weight (randomly
                        // within a priority); heaviest first here.
                        records.sort_by_key(|srv| (srv.priority(), std::cmp::Reverse(srv.weight())));
                        Ok(records
                            .iter()
                            .map(|srv| Target { host: srv.target().to_string(), port: srv.port() })
                            .collect())
                    }
                    Err(e) if e.is_no_records_found() => Err(format!("lookup {name}{server}: no such host")),
                    Err(e) => Err(format!("lookup {name}{server}: {e}")),
                }
            }
        };
        Ok::<_, String>((lookup(true).await, lookup(false).await))
    })?;
    endpoints_from(https, http, insecure, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_etcds() {
        assert_eq!(srv_service(true, ""), "etcd-client-ssl");
        assert_eq!(srv_service(false, ""), "etcd-client");
        assert_eq!(srv_service(true, "prod"), "etcd-client-ssl-prod");
        assert_eq!(srv_service(false, "prod"), "etcd-client-prod");
    }

    #[test]
    fn endpoints_come_https_first_and_insecure_ones_only_when_allowed() {
        let t = |host: &str, port| Target { host: host.into(), port };
        let mut warnings = Vec::new();
        let both = endpoints_from(Ok(vec![t("a.x.", 2379)]), Ok(vec![t("b.x.", 2380)]), true, &mut warnings);
        assert_eq!(both.unwrap(), ["https://a.x.:2379", "http://b.x.:2380"]);
        let secure = endpoints_from(Err("e".into()), Ok(vec![t("b.x.", 2380)]), false, &mut warnings);
        assert_eq!(secure.unwrap(), Vec::<String>::new());
        assert_eq!(
            String::from_utf8(warnings).unwrap(),
            "ignoring discovered insecure endpoint \"http://b.x.:2380\"\n"
        );
        let neither = endpoints_from(
            Err("lookup a: no such host".into()),
            Err("lookup b: no such host".into()),
            true,
            &mut Vec::new(),
        );
        assert_eq!(neither.unwrap_err(), "dns lookup errors: lookup a: no such host and lookup b: no such host");
    }
}
