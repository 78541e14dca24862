//! etcd's key-range conventions, shared by get, delete and watch.
//!
//! A request names a range as `key` plus `range_end`: empty `range_end` is
//! the single key, `"\0"` is every key from `key` on, anything else is the
//! half-open interval `[key, range_end)`.

/// The `range_end` that selects every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented and what follows dropped. A
/// prefix of only 0xff bytes has no such end, so it selects every key from
/// the prefix on (`"\0"`), as etcd's Go client does.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// Which keys a request covers, relative to its `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// Just the key.
    #[default]
    Single,
    /// Every key starting with the key; an empty key means every key.
    Prefix,
    /// Every key greater than or equal to the key.
    FromKey,
    /// `[key, end)`.
    End(Vec<u8>),
}

impl KeyRange {
    /// The `(key, range_end)` pair to put on the wire.
    pub(crate) fn resolve(&self, key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::Single => (key, Vec::new()),
            // etcd has no "prefix of nothing"; every key is ["\0", "\0").
            KeyRange::Prefix if key.is_empty() => (vec![0], vec![0]),
            KeyRange::Prefix => {
                let end = prefix_end(&key);
                (key, end)
            }
            KeyRange::FromKey if key.is_empty() => (vec![0], vec![0]),
            KeyRange::FromKey => (key, vec![0]),
            KeyRange::End(end) => (key, end.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a", b"b"),
            (b"/svc/", b"/svc0"),
            (b"a\xff", b"b"),
            (b"a\xff\xff", b"b"),
            (b"\xff", b"\0"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
            (b"ab\xfe", b"ab\xff"),
        ];
        for (prefix, want) in cases {
            assert_eq!(prefix_end(prefix), want.to_vec(), "prefix {prefix:?}");
        }
    }

    #[test]
    fn ranges_resolve_to_wire_pairs() {
        let key = || b"k".to_vec();
        assert_eq!(KeyRange::Single.resolve(key()), (b"k".to_vec(), vec![]));
        assert_eq!(KeyRange::Prefix.resolve(key()), (b"k".to_vec(), b"l".to_vec()));
        assert_eq!(KeyRange::Prefix.resolve(vec![]), (vec![0], vec![0]));
        assert_eq!(KeyRange::FromKey.resolve(key()), (b"k".to_vec(), vec![0]));
        assert_eq!(KeyRange::FromKey.resolve(vec![]), (vec![0], vec![0]));
        assert_eq!(KeyRange::End(b"z".to_vec()).resolve(key()), (b"k".to_vec(), b"z".to_vec()));
    }
}
