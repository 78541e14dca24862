//! etcd's v2 client types as etcdctl sees them, and etcdctl v2's output:
//! `printResponseKey` (simple, extended, json) and `ls`'s listing.

use serde::Deserialize;

use crate::gostr::json_string;

/// `client.Node` of etcd's v2 client (`client/keys.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub dir: bool,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub nodes: Option<Vec<Node>>,
    #[serde(default)]
    pub created_index: u64,
    #[serde(default)]
    pub modified_index: u64,
    /// Kept as the server's RFC 3339 text: Go re-marshals the parsed time
    /// to the same text.
    #[serde(default)]
    pub expiration: Option<String>,
    #[serde(default)]
    pub ttl: i64,
}

/// `client.Response`; `index` is the response's `X-Etcd-Index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysResponse {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub node: Option<Node>,
    #[serde(default)]
    pub prev_node: Option<Node>,
    #[serde(skip)]
    pub index: u64,
}

impl KeysResponse {
    /// The node, or an empty one: Go would dereference a nil pointer, which a
    /// v2 server never sends on success.
    pub fn node(&self) -> Node {
        self.node.clone().unwrap_or_default()
    }
}

/// `-o`: etcdctl v2 checks the value only when it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Simple,
    Extended,
    Json,
    Other(String),
}

impl Output {
    pub fn parse(s: &str) -> Output {
        match s {
            "simple" => Output::Simple,
            "extended" => Output::Extended,
            "json" => Output::Json,
            other => Output::Other(other.to_owned()),
        }
    }
}

/// What one `printResponseKey` call writes, to stdout and stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

/// etcdctl v2's `printResponseKey`.
pub fn response_key(resp: &KeysResponse, output: &Output) -> Printed {
    let node = resp.node();
    let mut p = Printed::default();
    match output {
        Output::Simple => {
            if resp.action != "delete" {
                p.stdout = format!("{}\n", node.value);
            } else {
                let prev = resp.prev_node.clone().unwrap_or_default();
                p.stdout = format!("PrevNode.Value: {}\n", prev.value);
            }
        }
        Output::Extended => {
            let s = &mut p.stdout;
            s.push_str(&format!("Key: {}\n", node.key));
            s.push_str(&format!("Created-Index: {}\n", node.created_index));
            s.push_str(&format!("Modified-Index: {}\n", node.modified_index));
            if let Some(prev) = &resp.prev_node {
                s.push_str(&format!("PrevNode.Value: {}\n", prev.value));
            }
            s.push_str(&format!("TTL: {}\n", node.ttl));
            s.push_str(&format!("Index: {}\n", resp.index));
            if resp.action != "delete" {
                s.push_str(&format!("\n{}\n", node.value));
            }
        }
        Output::Json => p.stdout = format!("{}\n", response_json(resp)),
        Output::Other(name) => p.stderr = format!("Unsupported output format: {name}\n"),
    }
    p
}

/// `ls` in simple mode: the key itself when it is a file, then every node
/// below, depth first; directories end in `/` with `-p`.
pub fn ls_simple(resp: &KeysResponse, slash: bool) -> String {
    fn walk(out: &mut String, n: &Node, slash: bool) {
        if n.dir && slash {
            out.push_str(&format!("{}/\n", n.key));
        } else {
            out.push_str(&format!("{}\n", n.key));
        }
        for child in n.nodes.iter().flatten() {
            walk(out, child, slash);
        }
    }
    let node = resp.node();
    let mut out = String::new();
    if !node.dir {
        out.push_str(&format!("{}\n", node.key));
    }
    for child in node.nodes.iter().flatten() {
        walk(&mut out, child, slash);
    }
    out
}

/// `json.Marshal` of `client.Response`: `value` always present, `nodes` and
/// `prevNode` `null` when absent, `createdIndex` before `modifiedIndex`.
pub fn response_json(resp: &KeysResponse) -> String {
    format!(
        "{{\"action\":{},\"node\":{},\"prevNode\":{}}}",
        json_string(resp.action.as_bytes()),
        opt_node_json(resp.node.as_ref()),
        opt_node_json(resp.prev_node.as_ref())
    )
}

fn opt_node_json(node: Option<&Node>) -> String {
    node.map_or_else(|| "null".to_owned(), node_json)
}

fn node_json(n: &Node) -> String {
    let mut s = format!("{{\"key\":{}", json_string(n.key.as_bytes()));
    if n.dir {
        s.push_str(",\"dir\":true");
    }
    s.push_str(&format!(",\"value\":{}", json_string(n.value.as_bytes())));
    match &n.nodes {
        None => s.push_str(",\"nodes\":null"),
        Some(nodes) => {
            let items: Vec<String> = nodes.iter().map(node_json).collect();
            s.push_str(&format!(",\"nodes\":[{}]", items.join(",")));
        }
    }
    s.push_str(&format!(",\"createdIndex\":{},\"modifiedIndex\":{}", n.created_index, n.modified_index));
    if let Some(exp) = &n.expiration {
        s.push_str(&format!(",\"expiration\":{}", json_string(exp.as_bytes())));
    }
    if n.ttl != 0 {
        s.push_str(&format!(",\"ttl\":{}", n.ttl));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, index: u64) -> KeysResponse {
        let mut r: KeysResponse = serde_json::from_str(body).unwrap();
        r.index = index;
        r
    }

    // Expected texts from etcd-v2-reference.md section 9 (etcdctl 3.4.23).
    #[test]
    fn json_reorders_and_fills_fields_as_go_does() {
        let r = parse(
            r#"{"action":"set","node":{"key":"/foo","value":"bar3","modifiedIndex":6,"createdIndex":6},"prevNode":{"key":"/foo","value":"bar2","modifiedIndex":5,"createdIndex":5}}"#,
            6,
        );
        assert_eq!(
            response_json(&r),
            r#"{"action":"set","node":{"key":"/foo","value":"bar3","nodes":null,"createdIndex":6,"modifiedIndex":6},"prevNode":{"key":"/foo","value":"bar2","nodes":null,"createdIndex":5,"modifiedIndex":5}}"#
        );
        let ttl = parse(
            r#"{"action":"get","node":{"key":"/ttl1","value":"v","expiration":"2026-12-06T15:21:56.830566788Z","ttl":60,"modifiedIndex":9,"createdIndex":9}}"#,
            9,
        );
        assert_eq!(
            response_json(&ttl),
            r#"{"action":"get","node":{"key":"/ttl1","value":"v","nodes":null,"createdIndex":9,"modifiedIndex":9,"expiration":"2026-12-06T15:21:56.830566788Z","ttl":60},"prevNode":null}"#
        );
        let dir = parse(
            r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"<&>","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":2,"createdIndex":2}}"#,
            3,
        );
        assert_eq!(
            response_json(&dir),
            r#"{"action":"get","node":{"key":"/d","dir":true,"value":"","nodes":[{"key":"/d/a","value":"\u003c\u0026\u003e","nodes":null,"createdIndex":3,"modifiedIndex":3}],"createdIndex":2,"modifiedIndex":2},"prevNode":null}"#
        );
    }

    #[test]
    fn simple_and_extended() {
        let set = parse(
            r#"{"action":"set","node":{"key":"/foo","value":"bar4","modifiedIndex":7,"createdIndex":7},"prevNode":{"key":"/foo","value":"bar3","modifiedIndex":6,"createdIndex":6}}"#,
            7,
        );
        assert_eq!(response_key(&set, &Output::Simple).stdout, "bar4\n");
        assert_eq!(
            response_key(&set, &Output::Extended).stdout,
            "Key: /foo\nCreated-Index: 7\nModified-Index: 7\nPrevNode.Value: bar3\nTTL: 0\nIndex: 7\n\nbar4\n"
        );
        let del = parse(
            r#"{"action":"delete","node":{"key":"/r/k2","modifiedIndex":45,"createdIndex":40},"prevNode":{"key":"/r/k2","value":"v2","modifiedIndex":40,"createdIndex":40}}"#,
            45,
        );
        assert_eq!(response_key(&del, &Output::Simple).stdout, "PrevNode.Value: v2\n");
        assert_eq!(
            response_key(&del, &Output::Extended).stdout,
            "Key: /r/k2\nCreated-Index: 40\nModified-Index: 45\nPrevNode.Value: v2\nTTL: 0\nIndex: 45\n"
        );
        assert_eq!(
            response_key(&del, &Output::parse("bogus")),
            Printed { stdout: String::new(), stderr: "Unsupported output format: bogus\n".into() }
        );
    }

    #[test]
    fn ls_lists_depth_first_with_optional_slashes() {
        let r = parse(
            r#"{"action":"get","node":{"key":"/ls","dir":true,"nodes":[{"key":"/ls/a","dir":true,"nodes":[{"key":"/ls/a/x","value":"2"}]},{"key":"/ls/b","value":"1"},{"key":"/ls/e","dir":true}]}}"#,
            1,
        );
        assert_eq!(ls_simple(&r, false), "/ls/a\n/ls/a/x\n/ls/b\n/ls/e\n");
        assert_eq!(ls_simple(&r, true), "/ls/a/\n/ls/a/x\n/ls/b\n/ls/e/\n");
        let file = parse(r#"{"action":"get","node":{"key":"/ls/b","value":"1"}}"#, 1);
        assert_eq!(ls_simple(&file, true), "/ls/b\n");
    }
}
