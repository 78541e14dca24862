//! Member and cluster ids computed exactly as etcd computes them, so a Keel
//! member started with etcd's flags reports the ids etcd would.

use sha1_smol::Sha1;

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
}
