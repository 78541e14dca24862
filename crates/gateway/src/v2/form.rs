//! Go's parsing of what a request carries, as etcd's v2 handlers see it:
//! `Request.ParseForm` (`url.ParseQuery` of the query, and of the body for
//! PUT and POST with `application/x-www-form-urlencoded`),
//! `strconv.ParseBool` and `strconv.ParseUint`, and the error texts Go
//! gives, which etcd returns to clients as causes.

/// Go's `maxFormSize`: a larger urlencoded body is refused.
pub(super) const MAX_FORM_BYTES: usize = 10 << 20;

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// A parsed form (Go's `r.Form`): every parameter in order, the body's
/// before the query's, so the first value of a repeated name is the one
/// etcd reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of `name` (Go's `r.Form[name][0]`).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// Go's `r.FormValue(name)`: the first value, `""` when absent.
    pub fn value(&self, name: &str) -> &str {
        self.first(name).unwrap_or("")
    }
}

/// Go's `ParseForm` for a request whose body, if `read_body`, is a form
/// body candidate (PUT or POST). The error is Go's text (etcd's 210 cause):
/// the body's error before the query's.
pub(super) fn parse_form(
    read_body: bool,
    raw_query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Form, String> {
    let mut pairs = Vec::new();
    let mut body_error = None;
    if read_body {
        match media_type(effective_content_type(content_type)) {
            Err(err) => body_error = Some(err),
            Ok(media) if media == URLENCODED => body_error = parse_query(body, &mut pairs).err(),
            Ok(_) => {}
        }
    }
    let query_error = parse_query(raw_query.unwrap_or("").as_bytes(), &mut pairs).err();
    match body_error.or(query_error) {
        Some(err) => Err(err),
        None => Ok(Form { pairs }),
    }
}

/// Whether `ParseForm` would read the body of a PUT or POST with this
/// Content-Type.
pub(super) fn is_urlencoded(content_type: Option<&str>) -> bool {
    media_type(effective_content_type(content_type)).is_ok_and(|media| media == URLENCODED)
}

/// RFC 7231's default, as Go applies it to a missing or empty Content-Type.
fn effective_content_type(content_type: Option<&str>) -> &str {
    content_type.filter(|ct| !ct.is_empty()).unwrap_or("application/octet-stream")
}

/// Go's `mime.ParseMediaType`, as far as `ParseForm` depends on it: the
/// lower-cased media type, or Go's error for a malformed one. (Parameters
/// are not checked: Go parses an urlencoded body even when they are bad.)
pub(super) fn media_type(content_type: &str) -> Result<String, String> {
    let base = content_type.split(';').next().unwrap_or("");
    let media = base.trim().to_lowercase();
    let (kind, rest) = consume_token(&media);
    if kind.is_empty() {
        return Err("mime: no media type".to_owned());
    }
    if rest.is_empty() {
        return Ok(media);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Err("mime: expected slash after first token".to_owned());
    };
    let (subtype, rest) = consume_token(rest);
    if subtype.is_empty() {
        return Err("mime: expected token after slash".to_owned());
    }
    if !rest.is_empty() {
        return Err("mime: unexpected content after media subtype".to_owned());
    }
    Ok(media)
}

fn consume_token(s: &str) -> (&str, &str) {
    let is_token = |c: char| c.is_ascii() && c > ' ' && c != '\x7f' && !"()<>@,;:\\\"/[]?=".contains(c);
    let end = s.find(|c: char| !is_token(c)).unwrap_or(s.len());
    s.split_at(end)
}

/// Go's `url.ParseQuery`: appends the pairs of `query` to `into` and
/// returns Go's error, if any (parsing goes on after one, as Go's does).
pub(super) fn parse_query(query: &[u8], into: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut error: Option<String> = None;
    for piece in query.split(|&b| b == b'&') {
        if piece.contains(&b';') {
            // Go overwrites an earlier error with this one.
            error = Some("invalid semicolon separator in query".to_owned());
            continue;
        }
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        match (unescape(name, true), unescape(value, true)) {
            (Ok(name), Ok(value)) => into.push((lossy(name), lossy(value))),
            (Err(err), _) | (_, Err(err)) => {
                error.get_or_insert(err);
            }
        }
    }
    error.map_or(Ok(()), Err)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// Go's `url.unescape`: `%XX` decoded (`+` as a space in a query
/// component); a malformed escape is Go's `EscapeError` text.
pub(super) fn unescape(s: &[u8], plus_is_space: bool) -> Result<Vec<u8>, String> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let digits = (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex));
                let (Some(high), Some(low)) = digits else {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(format!("invalid URL escape {}", go_quote(bad)));
                };
                // Both are hex digits, below 16.
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `strconv.Quote` of (possibly invalid UTF-8) bytes.
pub(super) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(valid) => (valid, None),
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                // The prefix up to `valid_up_to` is valid UTF-8 by definition.
                (std::str::from_utf8(valid).unwrap_or(""), after.first().copied())
            }
        };
        for c in valid.chars() {
            quote_char(&mut out, c);
        }
        rest = &rest[valid.len()..];
        if let Some(byte) = invalid {
            out.push_str(&format!("\\x{byte:02x}"));
            rest = &rest[1..];
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if c < ' ' || c == '\x7f' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
        c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        c => out.push(c),
    }
}

/// Go's `strconv.ParseBool`: anything but these twelve spellings (the
/// empty string included) is an error.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, radix, 64)` for radix 10 or 16: digits only
/// (no sign, no prefix, no spaces, not empty), and no overflow.
pub fn parse_uint(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(s, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(s: &str) -> (Vec<(String, String)>, Result<(), String>) {
        let mut pairs = Vec::new();
        let result = parse_query(s.as_bytes(), &mut pairs);
        (pairs, result)
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn parse_bool_is_strconv() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(s), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(s), Some(false), "{s}");
        }
        for s in ["", "maybe", "yes", "tRUE", " true", "2"] {
            assert_eq!(parse_bool(s), None, "{s}");
        }
    }

    #[test]
    fn parse_uint_is_strconv() {
        assert_eq!(parse_uint("0", 10), Some(0));
        assert_eq!(parse_uint("007", 10), Some(7));
        assert_eq!(parse_uint("18446744073709551615", 10), Some(u64::MAX));
        for s in ["", "+5", "-1", " 5", "5 ", "abc", "1_000", "18446744073709551616", "0x10"] {
            assert_eq!(parse_uint(s, 10), None, "{s}");
        }
        assert_eq!(parse_uint("8cced54924db0ef", 16), Some(0x8cced54924db0ef));
        assert_eq!(parse_uint("ABCdef", 16), Some(0xabcdef));
        for s in ["", "+1", "0x1", "zzzz", "10000000000000000"] {
            assert_eq!(parse_uint(s, 16), None, "{s}");
        }
    }

    #[test]
    fn parse_query_is_gos() {
        let (pairs, result) = query("a=1&b=2&a=3&&c&d=&e=x%20y+z");
        assert_eq!(result, Ok(()));
        assert_eq!(
            pairs,
            vec![pair("a", "1"), pair("b", "2"), pair("a", "3"), pair("c", ""), pair("d", ""), pair("e", "x y z")]
        );
        let (pairs, result) = query("value=%zz&ok=1");
        assert_eq!(result, Err(r#"invalid URL escape "%zz""#.to_owned()));
        assert_eq!(pairs, vec![pair("ok", "1")]);
        assert_eq!(query("v=%4").1, Err(r#"invalid URL escape "%4""#.to_owned()));
        assert_eq!(query("v=%").1, Err(r#"invalid URL escape "%""#.to_owned()));
        assert_eq!(query("a;b=1").1, Err("invalid semicolon separator in query".to_owned()));
        // The semicolon error replaces an earlier one; escapes do not.
        assert_eq!(query("v=%zz&a;b").1, Err("invalid semicolon separator in query".to_owned()));
        assert_eq!(query("a;b&v=%zz").1, Err("invalid semicolon separator in query".to_owned()));
        assert_eq!(query("v=%zz&w=%yy").1, Err(r#"invalid URL escape "%zz""#.to_owned()));
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote(b"%zz"), r#""%zz""#);
        assert_eq!(go_quote(b"%\xff"), r#""%\xff""#);
        assert_eq!(go_quote(b"%\"\\"), r#""%\"\\""#);
        assert_eq!(go_quote(b"%\n"), r#""%\n""#);
        assert_eq!(go_quote("%é".as_bytes()), "\"%é\"");
        assert_eq!(go_quote(b"%\xc3"), r#""%\xc3""#);
    }

    #[test]
    fn form_body_comes_before_query() {
        let form = parse_form(true, Some("value=a&value=b"), Some(URLENCODED), b"value=c&value=d").unwrap();
        assert_eq!(form.first("value"), Some("c"));
        let form =
            parse_form(true, Some("value=a"), Some("application/x-www-form-urlencoded; charset=utf-8"), b"value=c")
                .unwrap();
        assert_eq!(form.first("value"), Some("c"));
        // Other media types, or none, leave the body unread.
        for ct in [None, Some(""), Some("application/json"), Some("multipart/form-data; boundary=x")] {
            let form = parse_form(true, Some("value=a"), ct, b"value=c").unwrap();
            assert_eq!(form.first("value"), Some("a"), "{ct:?}");
        }
        // DELETE, GET and HEAD bodies are never read.
        let form = parse_form(false, None, Some(URLENCODED), b"dir=true").unwrap();
        assert!(!form.has("dir"));
        assert_eq!(form.value("dir"), "");
    }

    #[test]
    fn form_errors_body_first() {
        let err = parse_form(true, Some("a=%yy"), Some(URLENCODED), b"value=%zz").unwrap_err();
        assert_eq!(err, r#"invalid URL escape "%zz""#);
        let err = parse_form(false, Some("a=%yy"), Some(URLENCODED), b"value=%zz").unwrap_err();
        assert_eq!(err, r#"invalid URL escape "%yy""#);
        let err = parse_form(true, None, Some("/json"), b"").unwrap_err();
        assert_eq!(err, "mime: no media type");
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type("Application/X-WWW-Form-Urlencoded ; charset=x").as_deref(), Ok(URLENCODED));
        assert_eq!(media_type("text").as_deref(), Ok("text"));
        assert_eq!(media_type(" ").unwrap_err(), "mime: no media type");
        assert_eq!(media_type("a b").unwrap_err(), "mime: expected slash after first token");
        assert_eq!(media_type("a/").unwrap_err(), "mime: expected token after slash");
        assert_eq!(media_type("a/b/c").unwrap_err(), "mime: unexpected content after media subtype");
        assert!(is_urlencoded(Some(URLENCODED)));
        assert!(!is_urlencoded(None));
        assert!(!is_urlencoded(Some("a/")));
    }
}
