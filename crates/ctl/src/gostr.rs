//! Go's string conversions as etcdctl's output and error messages show them:
//! `strconv.Quote` (`%q`), `strconv.Unquote`, `ParseInt`, `ParseBool`,
//! `time.ParseDuration`, and `encoding/json`'s strings and byte slices.
//!
//! Error values are Go's error texts, since etcdctl prints them verbatim.

use std::time::Duration;

/// `strconv.Quote` of `bytes` seen as a Go string (invalid UTF-8 as `\x..`).
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (c, len) = match std::str::from_utf8(rest) {
            Ok(s) => {
                let c = s.chars().next().expect("non-empty");
                (Some(c), c.len_utf8())
            }
            Err(e) if e.valid_up_to() > 0 => {
                let s = std::str::from_utf8(&rest[..e.valid_up_to()]).expect("valid prefix");
                let c = s.chars().next().expect("non-empty");
                (Some(c), c.len_utf8())
            }
            Err(_) => (None, 1),
        };
        match c {
            None => out.push_str(&format!("\\x{:02x}", rest[0])),
            Some(c) => push_quoted_char(&mut out, c),
        }
        rest = &rest[len..];
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char) {
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
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// An approximation of Go's `unicode.IsPrint`: Rust has no table of the
/// Unicode general categories, so control, format and non-ASCII space
/// characters are escaped and every other assigned-looking character kept.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
        | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xd800..=0xdfff | 0xe000..=0xf8ff
        | 0xfffe | 0xffff | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

/// `strconv.Unquote` for a double-quoted or back-quoted Go string literal.
pub fn unquote(literal: &str) -> Result<String, &'static str> {
    const SYNTAX: &str = "invalid syntax";
    if let Some(raw) = literal.strip_prefix('`') {
        let raw = raw.strip_suffix('`').ok_or(SYNTAX)?;
        return if raw.contains('`') { Err(SYNTAX) } else { Ok(raw.replace('\r', "")) };
    }
    let body = literal.strip_prefix('"').and_then(|s| s.strip_suffix('"')).ok_or(SYNTAX)?;
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return Err(SYNTAX),
            '\\' => {
                let e = chars.next().ok_or(SYNTAX)?;
                let mut hex = |n: usize| -> Result<u32, &'static str> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        v = v * 16 + chars.next().and_then(|d| d.to_digit(16)).ok_or(SYNTAX)?;
                    }
                    Ok(v)
                };
                match e {
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'v' => out.push(11),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'x' => out.push(hex(2)? as u8),
                    'u' | 'U' => {
                        let v = hex(if e == 'u' { 4 } else { 8 })?;
                        let c = char::from_u32(v).ok_or(SYNTAX)?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8).expect("octal digit");
                        for _ in 0..2 {
                            v = v * 8 + chars.next().and_then(|d| d.to_digit(8)).ok_or(SYNTAX)?;
                        }
                        if v > 255 {
                            return Err(SYNTAX);
                        }
                        out.push(v as u8);
                    }
                    _ => return Err(SYNTAX),
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    // Go strings may hold any bytes; ours are only printed, so lossy is fine.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `strconv.ParseInt(s, base, 64)`; base 0 accepts Go's `0x`, `0o`, `0b`
/// and leading-`0` octal prefixes. The error is Go's message.
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let err = |what: &str| format!("strconv.ParseInt: parsing {}: {what}", quote(s.as_bytes()));
    let (negative, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if base == 0 {
        let lower = body.to_ascii_lowercase();
        if lower.starts_with("0x") {
            (16, &body[2..])
        } else if lower.starts_with("0o") {
            (8, &body[2..])
        } else if lower.starts_with("0b") {
            (2, &body[2..])
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        }
    } else {
        (base, body)
    };
    if digits.is_empty() {
        return Err(err("invalid syntax"));
    }
    let mut value: u128 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let d = c.to_digit(radix).ok_or_else(|| err("invalid syntax"))?;
        value = value * u128::from(radix) + u128::from(d);
        if value > u128::from(u64::MAX) {
            overflow = true;
            value = u128::from(u64::MAX);
        }
    }
    let limit = if negative { 1u128 << 63 } else { (1u128 << 63) - 1 };
    if overflow || value > limit {
        return Err(err("value out of range"));
    }
    Ok(if negative { (value as i128).wrapping_neg() as i64 } else { value as i64 })
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {}: invalid syntax", quote(s.as_bytes()))),
    }
}

/// `time.ParseDuration`. Negative durations are clamped to zero, as a
/// timeout of a negative length expires at once in Go too.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let quoted = quote(s.as_bytes());
    let invalid = || format!("time: invalid duration {quoted}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {quoted}"));
        }
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {} in duration {quoted}", quote(unit.as_bytes()))),
        };
        nanos += value * scale;
        rest = &rest[unit_len..];
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A string as `encoding/json` writes it (HTML-safe escaping, invalid UTF-8
/// replaced).
/// Go's `syscall.Errno` text for the errors a file or a spawn meets.
pub fn errno_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(2) => "no such file or directory".to_owned(),
        Some(13) => "permission denied".to_owned(),
        Some(8) => "exec format error".to_owned(),
        Some(20) => "not a directory".to_owned(),
        Some(21) => "is a directory".to_owned(),
        _ => error.to_string(),
    }
}

pub fn json_string(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding: how `encoding/json` writes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// etcdctl's `--hex` form of a byte string: `\x66\x6f\x6f`.
pub fn hex_escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// Case-insensitive Levenshtein distance, as cobra computes it for its
/// "Did you mean this?" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote("ключ".as_bytes()), "\"ключ\"");
        assert_eq!(quote(b"line1\nline2"), r#""line1\nline2""#);
        assert_eq!(quote(b"a\"b\\"), r#""a\"b\\""#);
        assert_eq!(quote(b"\x00\xff"), r#""\x00\xff""#);
        assert_eq!(quote("\u{200b}".as_bytes()), r#""\u200b""#);
    }

    #[test]
    fn unquote_matches_go() {
        assert_eq!(unquote(r#""a b""#).unwrap(), "a b");
        assert_eq!(unquote(r#""\x41\u00e9\101\n""#).unwrap(), "AéA\n");
        assert_eq!(unquote("`raw\\n`").unwrap(), "raw\\n");
        assert!(unquote(r#""bad\q""#).is_err());
        assert!(unquote(r#""open"#).is_err());
    }

    #[test]
    fn parse_int_errors_are_go_texts() {
        assert_eq!(parse_int("12", 0), Ok(12));
        assert_eq!(parse_int("0x10", 0), Ok(16));
        assert_eq!(parse_int("-1", 0), Ok(-1));
        assert_eq!(parse_int("1234", 16), Ok(0x1234));
        assert_eq!(parse_int("x", 0).unwrap_err(), r#"strconv.ParseInt: parsing "x": invalid syntax"#);
        assert_eq!(
            parse_int("99999999999999999999", 0).unwrap_err(),
            r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#
        );
        assert_eq!(parse_int("-9223372036854775808", 10), Ok(i64::MIN));
    }

    #[test]
    fn durations_parse_and_print_as_go() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("x").unwrap_err(), r#"time: invalid duration "x""#);
        assert_eq!(parse_duration("1").unwrap_err(), r#"time: missing unit in duration "1""#);
    }

    #[test]
    fn json_strings_and_bytes() {
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b""), "");
        assert_eq!(json_string(b"a<b>\n"), r#""a\u003cb\u003e\n""#);
        assert_eq!(hex_escaped(b"foo"), r"\x66\x6f\x6f");
    }

    #[test]
    fn levenshtein_is_case_insensitive() {
        assert_eq!(levenshtein("gt", "get"), 1);
        assert_eq!(levenshtein("GET", "get"), 0);
        assert_eq!(levenshtein("x", "txn"), 2);
    }
}
