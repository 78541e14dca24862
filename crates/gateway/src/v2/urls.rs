//! Peer URLs of a `/v2/members` request, checked as etcd's
//! `types.NewURLs` checks them (with `url.Parse` underneath), and with
//! their error texts, which etcd returns to the client.

use super::form::go_quote;

/// The URLs, trimmed and sorted, or etcd's message for the first bad one.
pub(super) fn new_urls(urls: &[String]) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("no valid URLs given".to_owned());
    }
    let mut checked = urls.iter().map(|url| check(url.trim())).collect::<Result<Vec<_>, _>>()?;
    checked.sort();
    Ok(checked)
}

/// One URL: parsed the way `url.Parse` does as far as its errors go, then
/// etcd's scheme, `host:port` and empty-path rules. Returns the URL as Go
/// prints it back (the scheme lower-cased).
fn check(url: &str) -> Result<String, String> {
    let parse_error = |err: &str| format!("parse {}: {err}", go_quote(url.as_bytes()));
    if url.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(parse_error("net/url: invalid control character in URL"));
    }
    let without_fragment = url.split('#').next().unwrap_or("");
    let (scheme, rest) = split_scheme(without_fragment).map_err(parse_error)?;
    let rest = rest.split('?').next().unwrap_or("");
    let (host, path) = match rest.strip_prefix("//") {
        Some(after) if !scheme.is_empty() => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            check_port(host).map_err(|err| parse_error(&err))?;
            (host, path)
        }
        // Without `//` there is no host: an opaque or rootless URL.
        _ => ("", rest),
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!("URL scheme must be http, https, unix, or unixs: {url}"));
    }
    if !is_host_port(host) {
        return Err(format!("URL address does not have the form \"host:port\": {url}"));
    }
    if !path.is_empty() {
        return Err(format!("URL must not contain a path: {url}"));
    }
    Ok(format!("{scheme}{}", &url[scheme.len()..]))
}

/// Go's `getScheme`: the scheme, if the URL starts with one.
fn split_scheme(url: &str) -> Result<(&str, &str), &'static str> {
    for (i, c) in url.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err("missing protocol scheme"),
            ':' => return Ok((&url[..i], &url[i + 1..])),
            _ => return Ok(("", url)),
        }
    }
    Ok(("", url))
}

/// `url.Parse`'s port check: after the host, nothing or `:` and digits.
fn check_port(host: &str) -> Result<(), String> {
    let after_host = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.find(']') {
            Some(end) => &bracketed[end + 1..],
            None => return Err("missing ']' in host".to_owned()),
        },
        None => host.rfind(':').map_or("", |at| &host[at..]),
    };
    let valid = after_host.is_empty()
        || after_host.strip_prefix(':').is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err(format!("invalid port {} after host", go_quote(after_host.as_bytes())))
    }
}

/// Whether Go's `net.SplitHostPort` accepts `hostport` (an empty host or
/// port is fine; the port's separator is not optional).
fn is_host_port(hostport: &str) -> bool {
    let Some(last_colon) = hostport.rfind(':') else { return false };
    let (open, close) = if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else { return false };
        if end + 1 != last_colon {
            return false;
        }
        (1, end + 1)
    } else {
        if hostport[..last_colon].contains(':') {
            return false;
        }
        (0, 0)
    };
    !hostport[open..].contains('[') && !hostport[close..].contains(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Result<Vec<String>, String> {
        new_urls(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn accepted_urls_are_sorted() {
        assert_eq!(
            urls(&["http://127.0.0.1:41384", " http://127.0.0.1:41382 "]).unwrap(),
            ["http://127.0.0.1:41382", "http://127.0.0.1:41384"]
        );
        assert_eq!(urls(&["HTTPS://[::1]:2380"]).unwrap(), ["https://[::1]:2380"]);
        assert_eq!(urls(&["unix://localhost:1"]).unwrap(), ["unix://localhost:1"]);
        assert_eq!(urls(&["http://:2380"]).unwrap(), ["http://:2380"]);
    }

    #[test]
    fn refusals_are_etcds() {
        assert_eq!(urls(&[]).unwrap_err(), "no valid URLs given");
        assert_eq!(urls(&["not a url"]).unwrap_err(), "URL scheme must be http, https, unix, or unixs: not a url");
        assert_eq!(urls(&["ftp://h:1"]).unwrap_err(), "URL scheme must be http, https, unix, or unixs: ftp://h:1");
        assert_eq!(
            urls(&["http://127.0.0.1"]).unwrap_err(),
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(urls(&["http://h:1/x"]).unwrap_err(), "URL must not contain a path: http://h:1/x");
        assert_eq!(urls(&["http://h:1/"]).unwrap_err(), "URL must not contain a path: http://h:1/");
        assert_eq!(urls(&["http://h:abc"]).unwrap_err(), r#"parse "http://h:abc": invalid port ":abc" after host"#);
        assert_eq!(urls(&[":foo"]).unwrap_err(), r#"parse ":foo": missing protocol scheme"#);
        assert_eq!(urls(&["http://[::1"]).unwrap_err(), r#"parse "http://[::1": missing ']' in host"#);
        assert_eq!(
            urls(&["http://a\u{1}b:1"]).unwrap_err(),
            r#"parse "http://a\x01b:1": net/url: invalid control character in URL"#
        );
        assert_eq!(urls(&["http:h:1"]).unwrap_err(), "URL address does not have the form \"host:port\": http:h:1");
    }

    #[test]
    fn split_host_port_is_gos() {
        for ok in ["h:1", ":1", "h:", "[::1]:1", "[::1]:"] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in ["", "h", "a:b:c", "[::1]", "[::1]x:1", "h]:1", "[h:1"] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
