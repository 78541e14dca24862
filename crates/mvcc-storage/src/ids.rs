//! Member and cluster ids computed exactly as etcd computes them, so a Keel
//! member started with etcd's flags reports the ids etcd would.

use keel_proto::etcdserverpb::Member;
use sha1_smol::Sha1;

use crate::Identity;

fn first_eight_bytes(digest: [u8; 20]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("sha1 has 20 bytes"))
}

/// etcd: sha1(sorted peer URLs joined without separator + cluster token).
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(cluster_token.as_bytes());
    first_eight_bytes(hasher.digest().bytes())
}

/// etcd's id for a member added at runtime (MemberAdd): sha1(sorted peer
/// URLs + the unix time in seconds), so re-adding the same URLs later gives
/// another id.
pub fn added_member_id(peer_urls: &[String], unix_seconds: u64) -> u64 {
    member_id(peer_urls, &unix_seconds.to_string())
}

/// etcd: sha1 of the sorted member ids, each as 8 big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(&id.to_be_bytes());
    }
    first_eight_bytes(hasher.digest().bytes())
}

/// The identity and members of a new cluster, as etcd bootstraps one from
/// `--name`, `--initial-advertise-peer-urls`, `--initial-cluster` and
/// `--initial-cluster-token`: this member with `peer_urls`, every other
/// entry of `initial_cluster` with its own, ids from URLs and token, sorted
/// by id. The flags are taken as already checked against each other.
pub fn new_cluster(
    name: &str,
    peer_urls: &[String],
    initial_cluster: &[(String, Vec<String>)],
    cluster_token: &str,
) -> (Identity, Vec<Member>) {
    let member_id = member_id(peer_urls, cluster_token);
    let mut members =
        vec![Member { id: member_id, name: name.to_string(), peer_ur_ls: peer_urls.to_vec(), ..Default::default() }];
    for (other, urls) in initial_cluster.iter().filter(|(other, _)| other != name) {
        members.push(Member {
            id: self::member_id(urls, cluster_token),
            name: other.clone(),
            peer_ur_ls: urls.clone(),
            ..Default::default()
        });
    }
    members.sort_by_key(|m| m.id);
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    (Identity { member_id, cluster_id: cluster_id(&ids) }, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcd() {
        // What `etcd` with no flags reports in every response header.
        let member = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[member])), "cdf818194e3a8c32");
    }

    #[test]
    fn a_restored_cluster_has_the_ids_etcdctl_restore_gives_it() {
        // `etcdctl snapshot restore --name x --initial-cluster x=http://127.0.0.1:1
        // --initial-advertise-peer-urls http://127.0.0.1:1` logs these.
        let urls = vec!["http://127.0.0.1:1".to_string()];
        let (identity, members) = new_cluster("x", &urls, &[("x".to_string(), urls.clone())], "etcd-cluster");
        assert_eq!(format!("{:x}", identity.member_id), "58a88bf978398f80");
        assert_eq!(format!("{:x}", identity.cluster_id), "a2624dd56e655037");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "x");
    }
}
