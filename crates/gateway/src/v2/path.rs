//! The URL path as Go's `net/http` hands it to etcd: percent-decoded by
//! the server (`url.ParseRequestURI`), cleaned by `ServeMux` (an unclean
//! path is redirected, never served), and escaped again for a redirect's
//! `Location` (`url.URL.String`).

use super::form;

/// The decoded path (Go's `r.URL.Path`): `%XX` decoded, `%2F` included,
/// `+` kept. `None` when an escape is malformed: Go's server refuses such a
/// request line before any handler runs.
pub(super) fn unescape(raw: &str) -> Option<String> {
    let bytes = form::unescape(raw.as_bytes(), false).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Go's `path.Clean` for a rooted path: no empty, `.` or `..` segments and
/// no trailing slash, `/` for the root.
pub(super) fn clean_rooted(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `ServeMux`'s `cleanPath`: `path.Clean`, keeping a trailing slash.
pub(super) fn clean(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let rooted = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let mut cleaned = clean_rooted(&rooted);
    if rooted.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// `url.URL{Path: path}.EscapedPath()`: everything but unreserved
/// characters and `$&+,/:;=@` is percent-encoded, with upper-case hex.
pub(super) fn escape(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for &byte in path.as_bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// Where `ServeMux` redirects an unclean path: the cleaned path, escaped,
/// with the original query (none when it is empty).
pub(super) fn redirect_location(cleaned: &str, raw_query: Option<&str>) -> String {
    let mut location = escape(cleaned);
    if let Some(query) = raw_query.filter(|query| !query.is_empty()) {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// Go's `htmlEscape` (the link in a redirect's body).
pub(super) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_serve_mux() {
        let cases = [
            ("/v2/keys/a/../foo", "/v2/keys/foo"),
            ("/v2/keys//foo", "/v2/keys/foo"),
            ("/v2/keys/..", "/v2"),
            ("/v2/keys/x/../foo", "/v2/keys/foo"),
            ("/v2/keys/", "/v2/keys/"),
            ("/v2/keys", "/v2/keys"),
            ("/v2/keys/./", "/v2/keys/"),
            ("/v2/keys/a/.", "/v2/keys/a"),
            ("/v2/../../..", "/"),
            ("/v2/keys/a//", "/v2/keys/a/"),
            ("", "/"),
            ("v2", "/v2"),
        ];
        for (path, want) in cases {
            assert_eq!(clean(path), want, "{path}");
        }
    }

    #[test]
    fn clean_rooted_is_path_clean() {
        assert_eq!(clean_rooted("/"), "/");
        assert_eq!(clean_rooted("//"), "/");
        assert_eq!(clean_rooted("/foo/"), "/foo");
        assert_eq!(clean_rooted("/a/b"), "/a/b");
        assert_eq!(clean_rooted("/a/../.."), "/");
    }

    #[test]
    fn unescape_decodes_before_routing() {
        assert_eq!(unescape("/v2/keys/a%2Fb").as_deref(), Some("/v2/keys/a/b"));
        assert_eq!(unescape("/v2/keys/sp%20ace+x").as_deref(), Some("/v2/keys/sp ace+x"));
        assert_eq!(unescape("/v2/keys/%zz"), None);
        assert_eq!(unescape("/v2/keys/%4"), None);
        assert_eq!(unescape("/v2/k%65ys").as_deref(), Some("/v2/keys"));
    }

    #[test]
    fn redirect_targets() {
        assert_eq!(redirect_location("/v2/keys/foo", None), "/v2/keys/foo");
        assert_eq!(redirect_location("/v2/keys/foo", Some("")), "/v2/keys/foo");
        assert_eq!(redirect_location("/v2/keys/foo", Some("value=1")), "/v2/keys/foo?value=1");
        assert_eq!(redirect_location("/v2/keys/a b?%", Some("a=1&b=2")), "/v2/keys/a%20b%3F%25?a=1&b=2");
        assert_eq!(redirect_location("/v2/keys/é", None), "/v2/keys/%C3%A9");
        assert_eq!(escape("/a-_.~$&+,/:;=@z"), "/a-_.~$&+,/:;=@z");
    }

    #[test]
    fn html_escape_is_gos() {
        assert_eq!(html_escape(r#"/a?x=1&y='"<>"#), "/a?x=1&amp;y=&#39;&#34;&lt;&gt;");
    }
}
