//! etcd's log lines (`--logger=zap`): what zap writes with etcd's encoder
//! configuration (`logutil.DefaultZapLoggerConfig`), for tracing's events.
//!
//! JSON (`--log-format=json`, the default), one object a line:
//!
//! ```text
//! {"level":"info","ts":"2025-01-02T03:04:05.123456Z","caller":"src/main.rs:206","msg":"ready to serve client requests","name":"default"}
//! ```
//!
//! `level` is zap's lowercase level (tracing's TRACE is "debug"), `ts` is
//! etcd's layout `2006-01-02T15:04:05.000000Z0700` (always UTC here, so it
//! ends in `Z`), `logger` appears only for raft's messages (etcd names its
//! raft logger "raft"), `caller` is zap's short caller (the last directory,
//! the file and the line), then the fields of the event's spans (outermost
//! first, where zap puts a logger's `With` context) and the event's own.
//! Strings stay strings, integers and floats are JSON numbers (NaN and
//! infinities as zap's strings "NaN", "+Inf", "-Inf"), booleans booleans,
//! `Debug` and `Display` values strings. Escaping is zap's: `"`, `\`, `\n`,
//! `\r`, `\t`, other control characters as `\u00xx`.
//!
//! Console (`--log-format=console`) is zap's console encoder: `ts`, `level`,
//! `logger`, `caller` and the message separated by tabs, then the fields as
//! one JSON object with zap's spaced separators.
//!
//! etcd's error lines carry a Go `stacktrace`; Keel's have none.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// zap's two encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Console,
}

impl Encoding {
    /// zap's console encoder writes its fields with spaced separators.
    fn spaced(self) -> bool {
        self == Encoding::Console
    }
}

/// The event formatter.
pub struct ZapFormat {
    pub encoding: Encoding,
}

/// Span fields, kept by the fmt layer as JSON members (`"key":value,...`)
/// to be copied into each event's line.
pub struct ZapFields {
    pub encoding: Encoding,
}

impl<'writer> FormatFields<'writer> for ZapFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor::new(self.encoding.spaced(), false);
        fields.record(&mut visitor);
        writer.write_str(&visitor.members)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = Visitor::new(self.encoding.spaced(), false);
        fields.record(&mut visitor);
        if !visitor.members.is_empty() {
            if !current.fields.is_empty() {
                current.fields.push_str(if self.encoding.spaced() { ", " } else { "," });
            }
            current.fields.push_str(&visitor.members);
        }
        Ok(())
    }
}

impl<S> FormatEvent<S, ZapFields> for ZapFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, ZapFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visitor = Visitor::new(self.encoding.spaced(), true);
        event.record(&mut visitor);
        let metadata = event.metadata();
        // Events from the `log` crate carry their origin as fields.
        let file = visitor.log_file.as_deref().or(metadata.file());
        let line = visitor.log_line.or(metadata.line());
        let target = visitor.log_target.as_deref().unwrap_or(metadata.target());

        let mut context = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<ZapFields>>() {
                    if !fields.fields.is_empty() {
                        context.push(fields.fields.clone());
                    }
                }
            }
        }
        if !visitor.members.is_empty() {
            context.push(visitor.members);
        }
        let entry = Entry {
            level: *metadata.level(),
            time: SystemTime::now(),
            logger: logger_name(target),
            caller: file.map(|file| short_caller(file, line)),
            message: visitor.message.as_deref().unwrap_or(""),
            context: &context,
        };
        let mut out = String::with_capacity(256);
        match self.encoding {
            Encoding::Json => entry.json(&mut out),
            Encoding::Console => entry.console(&mut out),
        }
        writer.write_str(&out)
    }
}

/// One log line's parts, as zap's `Entry` and its fields.
struct Entry<'a> {
    level: Level,
    time: SystemTime,
    logger: Option<&'static str>,
    caller: Option<String>,
    message: &'a str,
    /// Encoded members (`"key":value`), spans' first.
    context: &'a [String],
}

impl Entry<'_> {
    /// zap's JSON encoder: level, ts, logger, caller, msg, then the fields.
    fn json(&self, out: &mut String) {
        out.push_str("{\"level\":\"");
        out.push_str(level_name(self.level));
        out.push_str("\",\"ts\":\"");
        out.push_str(&timestamp(self.time));
        out.push('"');
        if let Some(logger) = self.logger {
            out.push_str(",\"logger\":");
            push_json_string(out, logger);
        }
        if let Some(caller) = &self.caller {
            out.push_str(",\"caller\":");
            push_json_string(out, caller);
        }
        out.push_str(",\"msg\":");
        push_json_string(out, self.message);
        for members in self.context {
            out.push(',');
            out.push_str(members);
        }
        out.push_str("}\n");
    }

    /// zap's console encoder: tab-separated, the message as is, the fields
    /// as one JSON object.
    fn console(&self, out: &mut String) {
        out.push_str(&timestamp(self.time));
        out.push('\t');
        out.push_str(level_name(self.level));
        if let Some(logger) = self.logger {
            out.push('\t');
            out.push_str(logger);
        }
        if let Some(caller) = &self.caller {
            out.push('\t');
            out.push_str(caller);
        }
        out.push('\t');
        out.push_str(self.message);
        if !self.context.is_empty() {
            out.push_str("\t{");
            out.push_str(&self.context.join(", "));
            out.push('}');
        }
        out.push('\n');
    }
}

/// zap's `LowercaseLevelEncoder`; zap has no trace level.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE | Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// etcd logs raft's messages through a logger named "raft"; Keel's raft
/// messages arrive with the target "raft".
fn logger_name(target: &str) -> Option<&'static str> {
    (target == "raft" || target.starts_with("raft::")).then_some("raft")
}

/// zap's `ShortCallerEncoder` (`EntryCaller.TrimmedPath`): the last
/// directory and the file, then the line; the whole path when it has fewer
/// than two separators.
pub fn short_caller(file: &str, line: Option<u32>) -> String {
    let is_separator = |c: char| c == '/' || c == '\\';
    let short = match file.rfind(is_separator) {
        Some(last) => match file[..last].rfind(is_separator) {
            Some(before) => &file[before + 1..],
            None => file,
        },
        None => file,
    };
    match line {
        Some(line) => format!("{short}:{line}"),
        None => short.to_string(),
    }
}

/// etcd's time layout, `2006-01-02T15:04:05.000000Z0700`, in UTC:
/// microseconds, truncated as Go truncates, and `Z` for the zone.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = ::time::OffsetDateTime::from_unix_timestamp(since.as_secs() as i64)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        since.subsec_micros()
    )
}

/// A JSON string as zap's encoder writes it: `"` and `\` escaped, `\n`,
/// `\r` and `\t` by name, other control characters as `\u00xx`, everything
/// else (non-ASCII included) as is.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        plain = at + 1;
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

/// Collects an event's or a span's fields as JSON members, and for events
/// the message and the `log` crate's origin fields.
struct Visitor {
    spaced: bool,
    /// Whether this is an event: its `message` is `msg`, and `log.*`
    /// fields describe where a `log` record came from.
    event: bool,
    members: String,
    message: Option<String>,
    log_target: Option<String>,
    log_file: Option<String>,
    log_line: Option<u32>,
}

impl Visitor {
    fn new(spaced: bool, event: bool) -> Visitor {
        Visitor {
            spaced,
            event,
            members: String::new(),
            message: None,
            log_target: None,
            log_file: None,
            log_line: None,
        }
    }

    fn key(&mut self, name: &str) {
        if !self.members.is_empty() {
            self.members.push_str(if self.spaced { ", " } else { "," });
        }
        // etcd's field names are dash-case (`local-member-id`); Rust's
        // cannot hold a dash, so `status_code` is written `status-code`.
        if name.contains('_') {
            push_json_string(&mut self.members, &name.replace('_', "-"));
        } else {
            push_json_string(&mut self.members, name);
        }
        self.members.push_str(if self.spaced { ": " } else { ":" });
    }

    /// A string field, unless it is one an event keeps apart.
    fn string(&mut self, field: &Field, value: &str) {
        if self.event {
            match field.name() {
                "message" => return self.message = Some(value.to_string()),
                "log.target" => return self.log_target = Some(value.to_string()),
                "log.file" => return self.log_file = Some(value.to_string()),
                "log.module_path" => return,
                _ => {}
            }
        }
        self.key(field.name());
        push_json_string(&mut self.members, value);
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field.name());
        let _ = write!(self.members, "{value}");
    }
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.event && field.name() == "log.line" {
            self.log_line = u32::try_from(value).ok();
            return;
        }
        self.number(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.number(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // zap writes what JSON cannot hold as strings.
        if value.is_nan() {
            self.string(field, "NaN");
        } else if value.is_infinite() {
            self.string(field, if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            self.number(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;

        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// The lines `log` writes through the formatter.
    fn lines(encoding: Encoding, log: impl FnOnce()) -> Vec<String> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(ZapFields { encoding })
            .event_format(ZapFormat { encoding })
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(capture.0.lock().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// The line with its timestamp, checked to be etcd's, replaced by "TS".
    fn without_ts(line: &str) -> String {
        let start = line.find(r#""ts":""#).expect("a ts") + 6;
        let ts = &line[start..start + 27];
        assert!(is_etcd_timestamp(ts), "{ts} in {line}");
        format!("{}TS{}", &line[..start], &line[start + 27..])
    }

    fn is_etcd_timestamp(ts: &str) -> bool {
        ts.len() == 27
            && ts.bytes().enumerate().all(|(at, byte)| match at {
                4 | 7 => byte == b'-',
                10 => byte == b'T',
                13 | 16 => byte == b':',
                19 => byte == b'.',
                26 => byte == b'Z',
                _ => byte.is_ascii_digit(),
            })
    }

    /// The caller zap would name for the first line of this file holding `needle`.
    fn caller_of(needle: &str) -> String {
        let line = include_str!("zap.rs").lines().position(|line| line.contains(needle)).unwrap() + 1;
        format!("logging/zap.rs:{line}")
    }

    #[test]
    fn fields_keep_their_types_after_level_ts_caller_msg() {
        let lines = lines(Encoding::Json, || {
            tracing::info!(
                text = "a string",
                negative = -3i64,
                count = 7u64,
                big = u128::MAX,
                ratio = 1.5,
                whole = 2.0,
                flag = true,
                list = ?vec![1, 2],
                shown = %"a b",
                local_member_id = "abc",
                "hello {}",
                "world"
            )
        });
        let line = &lines[0];
        // A macro spread over lines is called from the line it opens on.
        let opening = include_str!("zap.rs").lines().position(|l| l.trim() == "tracing::info!(").unwrap() + 1;
        let expected = format!(
            r#"{{"level":"info","ts":"TS","caller":"logging/zap.rs:{opening}","msg":"hello world","text":"a string","negative":-3,"count":7,"big":{},"ratio":1.5,"whole":2,"flag":true,"list":"[1, 2]","shown":"a b","local-member-id":"abc"}}"#,
            u128::MAX
        );
        assert_eq!(without_ts(line), expected);
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["negative"], -3);
        assert_eq!(value["flag"], true);
        assert_eq!(value["ratio"], 1.5);
    }

    #[test]
    fn strings_are_escaped_as_zap_escapes_them() {
        let mut out = String::new();
        push_json_string(&mut out, "q\"b\\s\nn\rr\tt\u{8}b\u{c}f\u{0}z\u{1b}e\u{7f}d/<>&é☃\u{2028}");
        assert_eq!(out, "\"q\\\"b\\\\s\\nn\\rr\\tt\\u0008b\\u000cf\\u0000z\\u001be\u{7f}d/<>&é☃\u{2028}\"");
        let message = "a \"quoted\"\nline\twith \\ and \u{1}";
        let lines = lines(Encoding::Json, || tracing::warn!(path = "C:\\x\"y", "{message}"));
        let value: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(value["msg"], message);
        assert_eq!(value["path"], "C:\\x\"y");
        assert!(lines[0].contains(r#""msg":"a \"quoted\"\nline\twith \\ and \u0001""#), "{}", lines[0]);
    }

    #[test]
    fn levels_are_zaps() {
        let lines = lines(Encoding::Json, || {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
            tracing::warn!("w");
            tracing::error!("e");
        });
        let levels: Vec<String> = lines
            .iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["level"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(levels, ["debug", "debug", "info", "warn", "error"]);
    }

    #[test]
    fn callers_are_shortened_as_zaps_short_caller() {
        assert_eq!(short_caller("crates/server/src/main.rs", Some(12)), "src/main.rs:12");
        assert_eq!(short_caller("src/main.rs", Some(3)), "src/main.rs:3");
        assert_eq!(short_caller("main.rs", Some(3)), "main.rs:3");
        assert_eq!(
            short_caller("/r/.cargo/registry/src/i/tonic-0.14.0/src/transport/server.rs", Some(1)),
            "transport/server.rs:1"
        );
        assert_eq!(short_caller("crates\\node\\src\\member\\cluster.rs", Some(9)), "member\\cluster.rs:9");
        assert_eq!(short_caller("a/b.rs", None), "a/b.rs");
    }

    #[test]
    fn timestamps_are_etcds_layout_in_utc() {
        let at = |seconds: u64, nanos: u32| timestamp(UNIX_EPOCH + Duration::new(seconds, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_700_000_000, 123_456_789), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(1_709_164_800, 999), "2024-02-29T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 1_000), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(4_102_444_799, 999_999_999), "2099-12-31T23:59:59.999999Z");
        assert!(is_etcd_timestamp(&timestamp(SystemTime::now())));
    }

    #[test]
    fn span_fields_come_before_the_events() {
        let lines = lines(Encoding::Json, || {
            let outer = tracing::info_span!("outer", member = "m1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", id = 5, late = tracing::field::Empty);
            inner.record("late", "yes");
            let _inner = inner.enter();
            tracing::info!(k = 1, "m");
        });
        assert!(lines[0].ends_with(r#","msg":"m","member":"m1","id":5,"late":"yes","k":1}"#), "{}", lines[0]);
    }

    #[test]
    fn raft_messages_name_the_raft_logger() {
        let lines = lines(Encoding::Json, || tracing::info!(target: "raft", "became leader at term 2"));
        let expected = format!(
            r#"{{"level":"info","ts":"TS","logger":"raft","caller":"{}","msg":"became leader at term 2"}}"#,
            caller_of("\"became leader at term 2\"))")
        );
        assert_eq!(without_ts(&lines[0]), expected);
    }

    #[test]
    fn floats_json_cannot_hold_are_zaps_strings() {
        let lines = lines(Encoding::Json, || tracing::info!(a = f64::NAN, b = f64::INFINITY, c = f64::NEG_INFINITY));
        assert!(lines[0].ends_with(r#","msg":"","a":"NaN","b":"+Inf","c":"-Inf"}"#), "{}", lines[0]);
    }

    #[test]
    fn console_lines_are_zaps_console_encoder() {
        let lines = lines(Encoding::Console, || {
            let span = tracing::info_span!("s", member = "m1");
            let _span = span.enter();
            tracing::warn!(n = 1, s = "x", "careful \"here\"");
            tracing::info!("plain");
        });
        let first: Vec<&str> = lines[0].split('\t').collect();
        assert!(is_etcd_timestamp(first[0]), "{}", lines[0]);
        let caller = caller_of("\"careful \\\"here\\\"\")");
        assert_eq!(first[1..], ["warn", caller.as_str(), "careful \"here\"", r#"{"member": "m1", "n": 1, "s": "x"}"#]);
        // Only the span's fields.
        assert!(lines[1].ends_with("\tplain\t{\"member\": \"m1\"}"), "{}", lines[1]);
    }

    #[test]
    fn an_entry_without_a_caller_has_no_caller_key() {
        let context = [r#""k":1"#.to_string()];
        let entry = Entry {
            level: Level::ERROR,
            time: UNIX_EPOCH,
            logger: None,
            caller: None,
            message: "m",
            context: &context,
        };
        let mut out = String::new();
        entry.json(&mut out);
        assert_eq!(out, "{\"level\":\"error\",\"ts\":\"1970-01-01T00:00:00.000000Z\",\"msg\":\"m\",\"k\":1}\n");
    }
}
