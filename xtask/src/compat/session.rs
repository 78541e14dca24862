//! What one server's run has learned so far: the variables cases captured and the lease ids
//! it granted.
//!
//! Lease ids are chosen by the server, so a script cannot spell them. A case that grants a
//! lease names a variable ([`super::cases::Case::capture`]); the id is read from that case's
//! output and later cases write `{name}` in their arguments or txn script, which is replaced by
//! this server's id in hex, the form etcdctl's lease commands and `--lease` take. Each server
//! keeps its own values. The granted ids are also what the normaliser rewrites to
//! `<lease-id-N>` (N in grant order), so outputs of the two servers compare equal when they
//! refer to the same lease of the script; an id the script never granted stays as printed.

use std::collections::BTreeMap;

use super::normalise::field_value;

/// Variables every session has from the start: `{peer}` is the server's peer address, `{dir}`
/// a scratch directory of the server's own (for the files `snapshot save` writes).
pub const PREDEFINED: &[&str] = &["peer", "dir"];

#[derive(Debug, Default)]
pub struct Session {
    vars: BTreeMap<&'static str, String>,
    leases: LeaseIds,
}

impl Session {
    /// A session for a server whose peer listener is at `peer_addr`, with `scratch` for files.
    pub fn for_server(peer_addr: &str, scratch: &str) -> Self {
        let mut session = Session::default();
        session.vars.insert(PREDEFINED[0], peer_addr.to_owned());
        session.vars.insert(PREDEFINED[1], scratch.to_owned());
        session
    }

    /// `template` with every `{name}` of a captured variable replaced by its value. A name
    /// that was never captured (the server failed the granting case) is left as written,
    /// so the case shows a difference instead of aborting the run.
    pub fn substitute(&self, template: &str) -> String {
        let mut text = template.to_owned();
        for (name, value) in &self.vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// Reads the lease id granted by `lease grant` (simple, json or fields output), or the
    /// member id `member add` printed, from `stdout` into `var`; `None` if `stdout` holds
    /// neither.
    pub fn capture(&mut self, var: &'static str, stdout: &str) -> Option<u64> {
        if let Some(id) = added_member_id(stdout) {
            self.vars.insert(var, format!("{id:x}"));
            return Some(id);
        }
        let id = granted_lease_id(stdout)?;
        self.vars.insert(var, format!("{id:016x}"));
        self.leases.learn(id);
        Some(id)
    }

    pub fn leases(&self) -> &LeaseIds {
        &self.leases
    }
}

/// The id in etcdctl 3.4's answer to `member add`: `Member <hex> added to cluster <hex>`,
/// each id padded to 16 columns (`%16x`).
fn added_member_id(stdout: &str) -> Option<u64> {
    let rest = stdout.lines().next()?.strip_prefix("Member ")?.trim_start();
    let (hex, tail) = rest.split_once(' ')?;
    tail.starts_with("added to cluster ").then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// The id in etcdctl 3.4's answer to `lease grant`: `lease <hex> granted with TTL(<n>s)`,
/// `{..,"ID":<decimal>,"TTL":<n>,..}` or `"ID" : <decimal>`.
fn granted_lease_id(stdout: &str) -> Option<u64> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("lease ") {
            let (hex, tail) = rest.split_once(' ')?;
            if tail.starts_with("granted with TTL(") {
                return u64::from_str_radix(hex, 16).ok();
            }
        }
    }
    field_value(stdout, "ID")?.parse().ok()
}

/// Lease ids granted in one server's run, in grant order.
#[derive(Debug, Default)]
pub struct LeaseIds(Vec<u64>);

impl LeaseIds {
    fn learn(&mut self, id: u64) {
        if !self.0.contains(&id) {
            self.0.push(id);
        }
    }

    /// Replaces each known id, as etcdctl prints it (`%016x` in simple output, decimal in
    /// json and fields output), with `<lease-id-N>`. Only whole tokens are replaced.
    pub fn rewrite(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (index, id) in self.0.iter().enumerate() {
            let placeholder = format!("<lease-id-{}>", index + 1);
            text = replace_token(&text, &format!("{id:016x}"), &placeholder, |b| b.is_ascii_alphanumeric());
            text = replace_token(&text, &id.to_string(), &placeholder, |b| b.is_ascii_digit());
        }
        text
    }
}

/// Replaces occurrences of `token` not adjacent to a byte for which `extends` holds.
fn replace_token(text: &str, token: &str, with: &str, extends: impl Fn(u8) -> bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (pos, _) in text.match_indices(token) {
        let end = pos + token.len();
        let joined_before = pos > 0 && extends(bytes[pos - 1]);
        let joined_after = end < bytes.len() && extends(bytes[end]);
        if pos < copied || joined_before || joined_after {
            continue;
        }
        out.push_str(&text[copied..pos]);
        out.push_str(with);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_the_id_of_an_added_member() {
        let mut session = Session::default();
        let out = "Member 6c2a6b19a1a2f71e added to cluster 5e7d7ff0f8a12f48\n\nETCD_NAME=\"l\"\n";
        assert_eq!(session.capture("m", out), Some(0x6c2a_6b19_a1a2_f71e));
        assert_eq!(session.substitute("member remove {m}"), "member remove 6c2a6b19a1a2f71e");
        assert_eq!(session.capture("n", "Member 1 removed from cluster 2\n"), None);
        // One id in 16 has 15 hex digits; etcdctl pads it.
        let padded = "Member  891d7decfa1297d added to cluster 79f7080e84bf7de1\n";
        assert_eq!(session.capture("p", padded), Some(0x891_d7de_cfa1_297d));
    }

    #[test]
    fn captures_the_granted_id_from_every_output_format() {
        for stdout in [
            "lease 694da213a7d0f601 granted with TTL(60s)\n",
            r#"{"cluster_id":1,"member_id":2,"revision":1,"raft_term":2,"ID":7587899152492721665,"TTL":60,"Error":""}"#,
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"ID\" : 7587899152492721665\n\"TTL\" : 60\n",
        ] {
            let mut session = Session::default();
            assert_eq!(session.capture("l", stdout), Some(0x694d_a213_a7d0_f601), "{stdout}");
            assert_eq!(session.substitute("put k v --lease={l}"), "put k v --lease=694da213a7d0f601");
        }
    }

    #[test]
    fn no_grant_no_capture_and_unknown_names_stay() {
        let mut session = Session::default();
        assert_eq!(session.capture("l", "Error: etcdserver: too many requests\n"), None);
        assert_eq!(session.substitute("lease revoke {l}"), "lease revoke {l}");
    }

    #[test]
    fn known_ids_become_placeholders_in_grant_order_and_others_stay() {
        let mut session = Session::default();
        session.capture("a", "lease 0150ca213a7d0eb0 granted with TTL(60s)\n");
        session.capture("b", "lease 150ca213a7d0eb06 granted with TTL(60s)\n");
        let text = "found 3 leases\n150ca213a7d0eb06\n0150ca213a7d0eb0\n0000000000001234\n\
                    {\"id\":1516765379820579590,\"lease\":94797836238786224,\"x\":1516765379820579590}\n\
                    150ca213a7d0eb06ff 11516765379820579590\n";
        assert_eq!(
            session.leases().rewrite(text),
            "found 3 leases\n<lease-id-2>\n<lease-id-1>\n0000000000001234\n\
             {\"id\":<lease-id-2>,\"lease\":<lease-id-1>,\"x\":<lease-id-2>}\n\
             150ca213a7d0eb06ff 11516765379820579590\n"
        );
    }
}
