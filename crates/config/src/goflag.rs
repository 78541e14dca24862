//! Go's value syntax, as etcd's flags (Go's `flag` package and etcd's own
//! flag types) accept it, with the error texts they print. Scripts written
//! for etcd pass values such as `0x10`, `t`, `1h30m` or an unsorted URL list;
//! Keel must read them the same way and refuse the same inputs.

use std::time::Duration;

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Result<bool, &'static str> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("parse error"),
    }
}

/// Go's `strconv.ParseUint(text, 0, 64)` as the `flag` package reports it:
/// base prefixes (`0x`, `0o`, `0b`, a leading `0` for octal) and `_`
/// between digits are allowed.
pub fn parse_uint(text: &str) -> Result<u64, &'static str> {
    let (digits, radix) = split_radix(text).ok_or("parse error")?;
    let digits = strip_underscores(digits, text)?;
    if digits.is_empty() || digits.starts_with('+') {
        return Err("parse error");
    }
    u64::from_str_radix(&digits, radix).map_err(|err| match err.kind() {
        std::num::IntErrorKind::PosOverflow => "value out of range",
        _ => "parse error",
    })
}

/// Go's `strconv.ParseUint(text, 10, 32)` reported raw, as etcd's `uint32`
/// flag type (`--max-concurrent-streams`) does.
pub fn parse_uint32(text: &str) -> Result<u32, String> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(format!("strconv.ParseUint: parsing {text:?}: invalid syntax"));
    }
    text.parse::<u32>().map_err(|_| format!("strconv.ParseUint: parsing {text:?}: value out of range"))
}

/// Go's `strconv.ParseInt(text, 0, 64)` as the `flag` package reports it.
pub fn parse_int(text: &str) -> Result<i64, &'static str> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_uint(unsigned)?;
    if negative {
        if magnitude > i64::MAX as u64 + 1 {
            return Err("value out of range");
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| "value out of range")
    }
}

fn split_radix(text: &str) -> Option<(&str, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'0' {
        return Some(match bytes[1] {
            b'x' | b'X' => (&text[2..], 16),
            b'o' | b'O' => (&text[2..], 8),
            b'b' | b'B' => (&text[2..], 2),
            _ => (&text[1..], 8),
        });
    }
    Some((text, 10))
}

/// Go's `underscoreOK` for base 0: `_` only between digits (a base
/// prefix counts as a digit), never doubled or trailing.
fn strip_underscores(digits: &str, whole: &str) -> Result<String, &'static str> {
    if !digits.contains('_') {
        return Ok(digits.to_string());
    }
    // "0x"/"0o"/"0b" count as a digit before an underscore, and so does the
    // leading 0 of an octal number.
    let prefixed = whole.len() > digits.len();
    let mut saw_digit = prefixed;
    let mut saw_underscore = false;
    for c in digits.chars() {
        if c == '_' {
            if !saw_digit {
                return Err("parse error");
            }
            saw_digit = false;
            saw_underscore = true;
        } else {
            saw_digit = true;
            saw_underscore = false;
        }
    }
    if saw_underscore {
        return Err("parse error");
    }
    Ok(digits.replace('_', ""))
}

/// Go's `time.ParseDuration`: "1h2m3.5s", "100ms", "-1s", "0". Negative
/// durations parse (Go allows them) and come back as `None`, which every
/// etcd duration flag either rejects later or treats as zero.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, &'static str> {
    const BAD: &str = "parse error";
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Some(Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(BAD);
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(BAD)?;
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(BAD);
        }
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(BAD),
        };
        rest = &rest[unit_len..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if fraction.contains('.') {
            return Err(BAD);
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| BAD)? };
        let mut part = whole.checked_mul(unit).ok_or(BAD)?;
        let mut scale = unit;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        nanos = nanos.checked_add(part).ok_or(BAD)?;
    }
    if nanos > i64::MAX as u128 {
        return Err(BAD);
    }
    if negative && nanos > 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_nanos(nanos as u64)))
}

/// Formats a duration as Go's `time.Duration.String` does ("1h0m0s",
/// "100ms", "0s"), so defaults print as etcd prints them.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = trim_fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

fn trim_fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A URL as etcd's flags take it (`types.NewURLs`): a scheme etcd knows,
/// `host:port`, no path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlagUrl {
    pub scheme: String,
    /// `host:port` as written (brackets kept around IPv6 hosts).
    pub host_port: String,
}

impl FlagUrl {
    pub fn host(&self) -> &str {
        let (host, _) = self.host_port.rsplit_once(':').unwrap_or((&self.host_port, ""));
        host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> &str {
        self.host_port.rsplit_once(':').map(|(_, port)| port).unwrap_or("")
    }
}

impl std::fmt::Display for FlagUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host_port)
    }
}

/// etcd's `types.NewURLs` over a comma-separated list: each URL checked with
/// etcd's messages, and the list sorted as etcd sorts it.
pub fn parse_urls(text: &str) -> Result<Vec<FlagUrl>, String> {
    let mut urls = text.split(',').map(|one| parse_url(one.trim())).collect::<Result<Vec<_>, _>>()?;
    urls.sort();
    urls.dedup();
    Ok(urls)
}

pub fn parse_url(text: &str) -> Result<FlagUrl, String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), text),
    };
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!("URL scheme must be http, https, unix, or unixs: {text}"));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let authority = authority.rsplit_once('@').map(|(_, host)| host).unwrap_or(authority);
    if !is_host_port(authority) {
        return Err(format!("URL address does not have the form \"host:port\": {text}"));
    }
    // Go's url.Parse keeps "/" as the path, which etcd then refuses too; a
    // bare query or fragment is not a path.
    if path.starts_with('/') {
        return Err(format!("URL must not contain a path: {text}"));
    }
    Ok(FlagUrl { scheme, host_port: authority.to_string() })
}

/// Go's `net.SplitHostPort` succeeds.
fn is_host_port(authority: &str) -> bool {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((_, after)) => after.starts_with(':') && !after[1..].contains(':'),
            None => false,
        };
    }
    authority.matches(':').count() == 1 && !authority.contains('[') && !authority.contains(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_as_go() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(yes), Ok(true));
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(no), Ok(false));
        }
        for bad in ["yes", "", "tRUE", "2"] {
            assert_eq!(parse_bool(bad), Err("parse error"));
        }
    }

    #[test]
    fn unsigned_with_go_bases() {
        assert_eq!(parse_uint("128"), Ok(128));
        assert_eq!(parse_uint("0x10"), Ok(16));
        assert_eq!(parse_uint("010"), Ok(8));
        assert_eq!(parse_uint("0b101"), Ok(5));
        assert_eq!(parse_uint("0x_1_0"), Ok(16));
        assert_eq!(parse_uint("0"), Ok(0));
        assert_eq!(parse_uint("1_000"), Ok(1000));
        assert_eq!(parse_uint("0_7"), Ok(7));
        assert_eq!(parse_uint("_1"), Err("parse error"));
        assert_eq!(parse_uint("1__0"), Err("parse error"));
        assert_eq!(parse_uint("1_"), Err("parse error"));
        assert_eq!(parse_uint("-1"), Err("parse error"));
        assert_eq!(parse_uint("+1"), Err("parse error"));
        assert_eq!(parse_uint("abc"), Err("parse error"));
        assert_eq!(parse_uint("1G"), Err("parse error"));
        assert_eq!(parse_uint(""), Err("parse error"));
        assert_eq!(parse_uint("99999999999999999999999"), Err("value out of range"));
    }

    #[test]
    fn signed() {
        assert_eq!(parse_int("-5"), Ok(-5));
        assert_eq!(parse_int("+5"), Ok(5));
        assert_eq!(parse_int("-0x10"), Ok(-16));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), Err("value out of range"));
        assert_eq!(parse_int("1e3"), Err("parse error"));
    }

    #[test]
    fn uint32_reports_strconv() {
        assert_eq!(parse_uint32("100"), Ok(100));
        assert_eq!(parse_uint32("abc"), Err("strconv.ParseUint: parsing \"abc\": invalid syntax".to_string()));
        assert_eq!(
            parse_uint32("99999999999"),
            Err("strconv.ParseUint: parsing \"99999999999\": value out of range".to_string())
        );
    }

    #[test]
    fn durations_as_go() {
        let ok = |text: &str| parse_duration(text).unwrap().unwrap();
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h2m3.5s"), Duration::from_millis(3_723_500));
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("1.5µs"), Duration::from_nanos(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(parse_duration("-1s"), Ok(None));
        for bad in ["", "10", "5x", "s", "1.s5", "-", ".", "1.2.3s", "..s"] {
            assert_eq!(parse_duration(bad), Err("parse error"), "{bad}");
        }
        assert_eq!(parse_duration("3000000h"), Err("parse error"));
    }

    #[test]
    fn durations_print_as_go() {
        assert_eq!(format_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(20)), "20s");
    }

    #[test]
    fn urls_as_etcd() {
        let urls = parse_urls("http://b:2,HTTP://a:1,http://b:2").unwrap();
        assert_eq!(urls.iter().map(ToString::to_string).collect::<Vec<_>>(), ["http://a:1", "http://b:2"]);
        assert_eq!(parse_url("http://[::1]:5").unwrap().host(), "::1");
        assert_eq!(parse_url("unix://localhost:1").unwrap().scheme, "unix");
        assert_eq!(parse_url("http://127.0.0.1:2379?x=1").unwrap().port(), "2379");
        assert_eq!(parse_url("foo").unwrap_err(), "URL scheme must be http, https, unix, or unixs: foo");
        assert_eq!(parse_url("").unwrap_err(), "URL scheme must be http, https, unix, or unixs: ");
        assert_eq!(
            parse_url("http://localhost").unwrap_err(),
            "URL address does not have the form \"host:port\": http://localhost"
        );
        assert_eq!(
            parse_url("http://1.2.3.4:2379/path").unwrap_err(),
            "URL must not contain a path: http://1.2.3.4:2379/path"
        );
        assert_eq!(parse_url("http://1.2.3.4:2379/").unwrap_err(), "URL must not contain a path: http://1.2.3.4:2379/");
        assert!(parse_url("http://::1:5").is_err());
    }
}
