//! `/v2/stats/self`, `/v2/stats/leader` and `/v2/stats/store`: etcd's JSON
//! shapes (Go's `json.Marshal`, no trailing newline), filled from what the
//! member exposes.
//!
//! Keel keeps no transport statistics: append counts are 0 and the rates
//! are left out (as etcd leaves them out when they are 0), and each
//! follower in the leader's stats is shown as etcd shows one it has not
//! heard from yet (zero latencies, `minimum` at etcd's initial 2^63, zero
//! counts).

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use keel_v2store::{render_time, write_json_string, Nanos, Stats};

use super::cluster::message;
use super::{respond, unix_nanos, LeaderSeen, JSON, V2};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stat {
    /// `/v2/stats/self`.
    Server,
    Leader,
    Store,
}

pub(super) async fn serve(v2: &V2, method: &Method, which: Stat) -> Response {
    if method != Method::GET {
        return super::method_not_allowed("GET");
    }
    match which {
        Stat::Server => {
            let leader = v2.observe_leader();
            let state =
                if leader.id != 0 && leader.id == v2.member.member_id() { "StateLeader" } else { "StateFollower" };
            let body = self_json(v2.member.name(), v2.member.member_id(), state, v2.started, leader, unix_nanos());
            json(body)
        }
        Stat::Store => json(store_json(&v2.member.v2_stats())),
        Stat::Leader => {
            let id = v2.member.member_id();
            if v2.member.leader() != id {
                return message(StatusCode::FORBIDDEN, None, "not current leader");
            }
            match v2.member.member_list(false).await {
                Ok(members) => {
                    let followers: Vec<u64> = members.iter().map(|m| m.id).filter(|&m| m != id).collect();
                    json(leader_json(id, &followers))
                }
                Err(err) => {
                    tracing::warn!(%err, "v2 leader stats: listing members failed");
                    message(StatusCode::INTERNAL_SERVER_ERROR, None, "Internal Server Error")
                }
            }
        }
    }
}

fn json(body: String) -> Response {
    respond(StatusCode::OK, &[("content-type", JSON)], Body::from(body))
}

/// Go's zero `time.Time`: the leader's start before any leader was seen.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// etcd's `serverStats`.
fn self_json(name: &str, id: u64, state: &str, started: Nanos, leader: LeaderSeen, now: Nanos) -> String {
    let mut out = String::from("{\"name\":");
    write_json_string(&mut out, name);
    out.push_str(&format!(",\"id\":\"{id:x}\",\"state\":\"{state}\",\"startTime\":\"{}\"", render_time(started)));
    let (leader_id, uptime, leader_start) = if leader.id == 0 {
        // Go's time.Since of the zero time saturates.
        (String::new(), go_duration(i64::MAX), GO_ZERO_TIME.to_owned())
    } else {
        (format!("{:x}", leader.id), go_duration(now.saturating_sub(leader.since)), render_time(leader.since))
    };
    out.push_str(&format!(
        ",\"leaderInfo\":{{\"leader\":\"{leader_id}\",\"uptime\":\"{uptime}\",\"startTime\":\"{leader_start}\"}}"
    ));
    out.push_str(",\"recvAppendRequestCnt\":0,\"sendAppendRequestCnt\":0}");
    out
}

/// etcd's `leaderStats`, followers by id (Go sorts map keys).
fn leader_json(leader: u64, followers: &[u64]) -> String {
    let mut names: Vec<String> = followers.iter().map(|id| format!("{id:x}")).collect();
    names.sort_unstable();
    let mut out = format!("{{\"leader\":\"{leader:x}\",\"followers\":{{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "\"{name}\":{{\"latency\":{{\"current\":0,\"average\":0,\"standardDeviation\":0,\
             \"minimum\":9223372036854775808,\"maximum\":0}},\"counts\":{{\"fail\":0,\"success\":0}}}}"
        ));
    }
    out.push_str("}}");
    out
}

/// `/v2/stats/store`, in etcd's field order.
fn store_json(stats: &Stats) -> String {
    let fields = [
        ("getsSuccess", stats.gets_success),
        ("getsFail", stats.gets_fail),
        ("setsSuccess", stats.sets_success),
        ("setsFail", stats.sets_fail),
        ("deleteSuccess", stats.delete_success),
        ("deleteFail", stats.delete_fail),
        ("updateSuccess", stats.update_success),
        ("updateFail", stats.update_fail),
        ("createSuccess", stats.create_success),
        ("createFail", stats.create_fail),
        ("compareAndSwapSuccess", stats.compare_and_swap_success),
        ("compareAndSwapFail", stats.compare_and_swap_fail),
        ("compareAndDeleteSuccess", stats.compare_and_delete_success),
        ("compareAndDeleteFail", stats.compare_and_delete_fail),
        ("expireCount", stats.expire_count),
        ("watchers", stats.watchers),
    ];
    let mut out = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{name}\":{value}"));
    }
    out.push('}');
    out
}

/// Go's `time.Duration.String()`: `12m32.648760692s`, `1.5ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    if u == 0 {
        return "0s".to_owned();
    }
    if u < SECOND {
        let (precision, unit) = match u {
            0..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (fraction, whole) = go_fraction(u, precision);
        return format!("{sign}{whole}{fraction}{unit}");
    }
    let (fraction, seconds) = go_fraction(u, 9);
    let (minutes, seconds) = (seconds / 60, seconds % 60);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}{fraction}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}{fraction}s")
    } else {
        format!("{sign}{seconds}{fraction}s")
    }
}

/// Go's `fmtFrac`: the last `precision` digits of `v` as `.ddd` without
/// trailing zeros (nothing when they are all zero), and what is left.
fn go_fraction(v: u64, precision: u32) -> (String, u64) {
    let divisor = 10u64.pow(precision);
    let digits = format!("{:0width$}", v % divisor, width = precision as usize);
    let digits = digits.trim_end_matches('0');
    let fraction = if digits.is_empty() { String::new() } else { format!(".{digits}") };
    (fraction, v / divisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_gos() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (12_345_678, "12.345678ms"),
            (1_000_000_000, "1s"),
            (3_793_688_927, "3.793688927s"),
            (752_648_760_692, "12m32.648760692s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_500_000_000, "1h1m1.5s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (-1_500_000_000, "-1.5s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn leader_stats_shape() {
        assert_eq!(leader_json(0x8cced54924db0ef, &[]), r#"{"leader":"8cced54924db0ef","followers":{}}"#);
        assert_eq!(
            leader_json(1, &[0x1902bf70f248d0c7, 0x2]),
            concat!(
                r#"{"leader":"1","followers":{"#,
                r#""1902bf70f248d0c7":{"latency":{"current":0,"average":0,"standardDeviation":0,"minimum":9223372036854775808,"maximum":0},"counts":{"fail":0,"success":0}},"#,
                r#""2":{"latency":{"current":0,"average":0,"standardDeviation":0,"minimum":9223372036854775808,"maximum":0},"counts":{"fail":0,"success":0}}"#,
                "}}"
            )
        );
    }

    #[test]
    fn store_stats_shape() {
        let stats = Stats { gets_success: 23, gets_fail: 140, expire_count: 10, ..Default::default() };
        assert_eq!(
            store_json(&stats),
            r#"{"getsSuccess":23,"getsFail":140,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":10,"watchers":0}"#
        );
    }
}
