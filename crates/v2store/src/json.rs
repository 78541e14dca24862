//! JSON exactly as Go's `encoding/json` writes v2's structs.

use crate::{Action, Event, Nanos, NodeView};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Appends `s` as a JSON string the Go way: `<`, `>`, `&` as `\u003c`,
/// `\u003e`, `\u0026`; U+2028/U+2029 escaped; other non-ASCII raw.
pub fn write_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Go escapes the other control characters, and the HTML ones so
            // the output can sit inside <script>, as \u00XX in lowercase hex.
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' => {
                let byte = c as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Go's `time.Time` JSON (RFC 3339, UTC, nanoseconds without trailing
/// zeros): `2026-12-06T14:50:54.813674453Z`.
pub fn render_time(at: Nanos) -> String {
    let seconds = at.div_euclid(NANOS_PER_SECOND);
    let nanos = at.rem_euclid(NANOS_PER_SECOND);
    // Any i64 of nanoseconds is within the years `time` represents.
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// etcd's `ceil((expiration - now) / 1s)` with Go's truncating division: a
/// node more than a second overdue shows a negative TTL, as etcd's would.
/// The difference saturates at the `i64` range, like Go's `Time.Sub`.
pub(crate) fn ttl_seconds(expiration: Nanos, now: Nanos) -> i64 {
    let left = expiration.saturating_sub(now);
    let mut ttl = left / NANOS_PER_SECOND;
    if left % NANOS_PER_SECOND > 0 {
        ttl += 1;
    }
    ttl
}

fn write_node(out: &mut String, node: &NodeView, now: Nanos, with_ttl: bool) {
    out.push('{');
    let mut first = true;
    let mut field = |out: &mut String, name: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if !node.key.is_empty() {
        field(out, "key");
        write_json_string(out, &node.key);
    }
    if let Some(value) = &node.value {
        field(out, "value");
        write_json_string(out, value);
    }
    if node.dir {
        field(out, "dir");
        out.push_str("true");
    }
    if let Some(expiration) = node.expiration {
        field(out, "expiration");
        out.push('"');
        out.push_str(&render_time(expiration));
        out.push('"');
        let ttl = ttl_seconds(expiration, now);
        if with_ttl && ttl != 0 {
            field(out, "ttl");
            out.push_str(&ttl.to_string());
        }
    }
    if let Some(children) = node.nodes.as_ref().filter(|children| !children.is_empty()) {
        field(out, "nodes");
        out.push('[');
        for (position, child) in children.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            write_node(out, child, now, with_ttl);
        }
        out.push(']');
    }
    if node.modified_index != 0 {
        field(out, "modifiedIndex");
        out.push_str(&node.modified_index.to_string());
    }
    if node.created_index != 0 {
        field(out, "createdIndex");
        out.push_str(&node.created_index.to_string());
    }
    out.push('}');
}

impl Event {
    /// `{"action":..,"node":..,"prevNode":..}` and a newline. `now` turns
    /// expirations into `ttl` (ceil of the seconds left; omitted when 0);
    /// `no_value` (noValueOnSuccess) leaves out node and prevNode.
    pub fn to_json(&self, now: Nanos, no_value: bool) -> String {
        let mut out = String::from("{\"action\":");
        write_json_string(&mut out, self.action.as_str());
        // etcd's handler strips the nodes of these four actions only; get and
        // delete keep theirs whatever the request said.
        let strip =
            no_value && matches!(self.action, Action::Set | Action::Create | Action::Update | Action::CompareAndSwap);
        if !strip {
            out.push_str(",\"node\":");
            write_node(&mut out, &self.node, now, true);
            if let Some(prev) = &self.prev_node {
                out.push_str(",\"prevNode\":");
                // etcd fixes the prevNode of an expiry at the moment it expired,
                // when its TTL came out as 0; rendering it later must not turn
                // that into a negative count.
                write_node(&mut out, prev, now, self.action != Action::Expire);
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_json_string(&mut out, s);
        out
    }

    fn file(key: &str, value: &str, modified: u64, created: u64) -> NodeView {
        NodeView {
            key: key.into(),
            value: Some(value.into()),
            dir: false,
            expiration: None,
            nodes: None,
            modified_index: modified,
            created_index: created,
        }
    }

    fn event(action: Action, node: NodeView, prev_node: Option<NodeView>) -> Event {
        let index = node.modified_index;
        Event { action, node, prev_node, index, refresh: false }
    }

    #[test]
    fn strings_are_escaped_like_go() {
        assert_eq!(escaped("<a>&"), r#""\u003ca\u003e\u0026""#);
        assert_eq!(escaped("héllo w"), "\"héllo w\"");
        assert_eq!(escaped("q\"b\\"), r#""q\"b\\""#);
        assert_eq!(escaped("\n\r\t\u{1}\u{8}\u{c}\u{1f}\u{7f}"), "\"\\n\\r\\t\\u0001\\u0008\\u000c\\u001f\u{7f}\"");
        assert_eq!(escaped("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(escaped(""), r#""""#);
    }

    #[test]
    fn times_render_as_rfc3339_nano_without_trailing_zeros() {
        assert_eq!(render_time(1_796_568_654_813_674_453), "2026-12-06T14:50:54.813674453Z");
        // Trailing zeros of the fraction go (8 digits left).
        assert_eq!(render_time(1_796_568_755_067_858_230), "2026-12-06T14:52:35.06785823Z");
        assert_eq!(render_time(1_796_568_755_000_000_000), "2026-12-06T14:52:35Z");
        assert_eq!(render_time(1_796_568_755_100_000_000), "2026-12-06T14:52:35.1Z");
        assert_eq!(render_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(render_time(-1), "1969-12-31T23:59:59.999999999Z");
        // Leap day, and the last second of a leap year.
        assert_eq!(render_time(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(render_time(1_735_689_599_000_000_001), "2024-12-31T23:59:59.000000001Z");
        assert_eq!(render_time(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(render_time(i64::MIN), "1677-09-21T00:12:43.145224192Z");
    }

    #[test]
    fn ttl_rounds_up_and_truncates_towards_zero_like_go() {
        let second = NANOS_PER_SECOND;
        assert_eq!(ttl_seconds(100 * second, 0), 100);
        assert_eq!(ttl_seconds(100 * second, 1), 100);
        assert_eq!(ttl_seconds(100 * second + 1, 0), 101);
        assert_eq!(ttl_seconds(0, 0), 0);
        assert_eq!(ttl_seconds(0, 300_000_000), 0);
        assert_eq!(ttl_seconds(0, 1_500_000_000), -1);
        assert_eq!(ttl_seconds(i64::MAX, i64::MIN), 9_223_372_037);
        assert_eq!(ttl_seconds(i64::MIN, i64::MAX), -9_223_372_036);
    }

    #[test]
    fn set_with_prev_node_matches_the_transcript() {
        let json = event(Action::Set, file("/message", "world", 5, 5), Some(file("/message", "hello", 4, 4)))
            .to_json(0, false);
        assert_eq!(
            json,
            "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"world\",\"modifiedIndex\":5,\"createdIndex\":5},\"prevNode\":{\"key\":\"/message\",\"value\":\"hello\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
        );
    }

    #[test]
    fn ttl_counts_down_from_the_render_time() {
        let expiration = 1_796_568_654_813_674_453;
        let mut node = file("/ttlkey", "v", 21, 21);
        node.expiration = Some(expiration);
        let set = event(Action::Set, node, None);
        assert_eq!(
            set.to_json(expiration - 100 * NANOS_PER_SECOND, false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/ttlkey\",\"value\":\"v\",\"expiration\":\"2026-12-06T14:50:54.813674453Z\",\"ttl\":100,\"modifiedIndex\":21,\"createdIndex\":21}}\n"
        );
        assert!(set.to_json(expiration - 89 * NANOS_PER_SECOND + 5, false).contains("\"ttl\":89,"));
        // ttl=0: expiration shown, ttl omitted.
        assert!(!set.to_json(expiration, false).contains("\"ttl\""));
    }

    #[test]
    fn expire_prev_node_keeps_expiration_but_loses_ttl() {
        let mut prev = file("/queue/00000000000000000037", "job2", 37, 37);
        prev.expiration = Some(1_796_568_664_886_829_352);
        let node = NodeView { value: None, modified_index: 47, ..prev.clone() };
        let node = NodeView { expiration: None, ..node };
        let expire = event(Action::Expire, node, Some(prev));
        assert_eq!(
            expire.to_json(1_796_568_700_000_000_000, false),
            "{\"action\":\"expire\",\"node\":{\"key\":\"/queue/00000000000000000037\",\"modifiedIndex\":47,\"createdIndex\":37},\"prevNode\":{\"key\":\"/queue/00000000000000000037\",\"value\":\"job2\",\"expiration\":\"2026-12-06T14:51:04.886829352Z\",\"modifiedIndex\":37,\"createdIndex\":37}}\n"
        );
    }

    #[test]
    fn empty_root_renders_as_a_bare_dir() {
        let root = NodeView {
            key: String::new(),
            value: None,
            dir: true,
            expiration: None,
            nodes: Some(Vec::new()),
            modified_index: 0,
            created_index: 0,
        };
        assert_eq!(event(Action::Get, root, None).to_json(0, false), "{\"action\":\"get\",\"node\":{\"dir\":true}}\n");
    }

    #[test]
    fn no_value_strips_only_the_four_write_actions() {
        let set = event(Action::Set, file("/nv", "x", 45, 45), None);
        assert_eq!(set.to_json(0, true), "{\"action\":\"set\"}\n");
        let create = event(Action::Create, file("/zq/00000000000000000087", "t", 87, 87), None);
        assert_eq!(create.to_json(0, true), "{\"action\":\"create\"}\n");
        let get = event(Action::Get, file("/nv", "x", 45, 45), None);
        assert_eq!(
            get.to_json(0, true),
            "{\"action\":\"get\",\"node\":{\"key\":\"/nv\",\"value\":\"x\",\"modifiedIndex\":45,\"createdIndex\":45}}\n"
        );
        let delete_node = NodeView { value: None, modified_index: 46, ..file("/nv", "x", 45, 45) };
        let delete = event(Action::Delete, delete_node, Some(file("/nv", "x", 45, 45)));
        assert_eq!(
            delete.to_json(0, true),
            "{\"action\":\"delete\",\"node\":{\"key\":\"/nv\",\"modifiedIndex\":46,\"createdIndex\":45},\"prevNode\":{\"key\":\"/nv\",\"value\":\"x\",\"modifiedIndex\":45,\"createdIndex\":45}}\n"
        );
    }

    #[test]
    fn html_value_and_empty_value() {
        assert_eq!(
            event(Action::Set, file("/html", "<a>&", 10, 10), None).to_json(0, false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/html\",\"value\":\"\\u003ca\\u003e\\u0026\",\"modifiedIndex\":10,\"createdIndex\":10}}\n"
        );
        assert_eq!(
            event(Action::Set, file("/empty", "", 6, 6), None).to_json(0, false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/empty\",\"value\":\"\",\"modifiedIndex\":6,\"createdIndex\":6}}\n"
        );
    }
}
