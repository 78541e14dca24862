//! The key ranges a watcher can cover, normalised as etcd's watch server
//! normalises a WatchCreateRequest.

use crate::WatchError;

/// The keys one watcher covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly this key.
    Single(Vec<u8>),
    /// Every key `k` with `start <= k < end`.
    Between { start: Vec<u8>, end: Vec<u8> },
    /// Every key `k >= start` (etcd's `range_end = "\0"`).
    From(Vec<u8>),
}

impl KeyRange {
    /// The range a WatchCreateRequest's `key` and `range_end` mean: an empty
    /// key is `"\0"` (the smallest key), an empty end is a single key, an end
    /// of `"\0"` is every key from `key` on. A range with `end <= key` covers
    /// nothing and is refused as etcd refuses it.
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Result<KeyRange, WatchError> {
        let start = if key.is_empty() { vec![0] } else { key.to_vec() };
        match range_end {
            [] => Ok(KeyRange::Single(start)),
            [0] => Ok(KeyRange::From(start)),
            end if start.as_slice() < end => Ok(KeyRange::Between { start, end: end.to_vec() }),
            _ => Err(WatchError::EmptyRange),
        }
    }

    /// The smallest key the range covers.
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Single(start) | KeyRange::Between { start, .. } | KeyRange::From(start) => start,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_slice() == key,
            KeyRange::Between { start, end } => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::From(start) => start.as_slice() <= key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_forms_normalise_as_etcd() {
        assert_eq!(KeyRange::from_request(b"a", b"").unwrap(), KeyRange::Single(b"a".to_vec()));
        assert_eq!(KeyRange::from_request(b"", b"").unwrap(), KeyRange::Single(vec![0]));
        assert_eq!(KeyRange::from_request(b"a", b"\0").unwrap(), KeyRange::From(b"a".to_vec()));
        assert_eq!(KeyRange::from_request(b"", b"\0").unwrap(), KeyRange::From(vec![0]));
        assert_eq!(
            KeyRange::from_request(b"a", b"b").unwrap(),
            KeyRange::Between { start: b"a".to_vec(), end: b"b".to_vec() }
        );
        assert!(matches!(KeyRange::from_request(b"b", b"a"), Err(WatchError::EmptyRange)));
        assert!(matches!(KeyRange::from_request(b"a", b"a"), Err(WatchError::EmptyRange)));
    }

    #[test]
    fn containment() {
        let prefix = KeyRange::from_request(b"foo", b"fop").unwrap();
        assert!(prefix.contains(b"foo"));
        assert!(prefix.contains(b"foo/bar"));
        assert!(!prefix.contains(b"fop"));
        assert!(!prefix.contains(b"fo"));
        let all = KeyRange::from_request(b"", b"\0").unwrap();
        assert!(all.contains(b"\0") && all.contains(b"zzz"));
        assert!(KeyRange::Single(b"k".to_vec()).contains(b"k"));
        assert!(!KeyRange::Single(b"k".to_vec()).contains(b"k2"));
    }
}
