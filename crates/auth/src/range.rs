//! Key ranges as etcd's permission checks see them, and merged sets of them.
//!
//! A permission or request names `key` and `range_end`: an empty
//! `range_end` means the single key, `"\0"` means every key from `key` on,
//! anything else the half-open range `[key, range_end)`. A set of granted
//! ranges covers a requested range when their union covers all of it,
//! whichever permissions the pieces came from (etcd's interval tree
//! `Contains`).

/// `[start, end)`; `end: None` has no upper bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// The key alone.
    pub fn point(key: &[u8]) -> KeyRange {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange { start: key.to_vec(), end: Some(end) }
    }

    /// The keys a permission or a request with `key` and `range_end` names.
    pub fn of(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::point(key),
            [0] => KeyRange { start: key.to_vec(), end: None },
            end => KeyRange { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    /// Whether the range `self` ends at or after the end of `other`.
    fn ends_at_or_after(&self, other: &KeyRange) -> bool {
        match (&self.end, &other.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine >= theirs,
        }
    }
}

/// Disjoint ranges in key order, touching and overlapping ones merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<KeyRange>,
}

impl RangeSet {
    pub fn new(ranges: impl IntoIterator<Item = KeyRange>) -> RangeSet {
        let mut ranges: Vec<KeyRange> = ranges.into_iter().collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        let mut merged: Vec<KeyRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                // Starts inside (or right at the end of) the last one: extend it.
                Some(last) if last.end.as_ref().is_none_or(|end| range.start <= *end) => {
                    if range.ends_at_or_after(last) {
                        last.end = range.end;
                    }
                }
                _ => merged.push(range),
            }
        }
        RangeSet { ranges: merged }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether every key of `range` is in the set.
    pub fn covers(&self, range: &KeyRange) -> bool {
        let after = self.ranges.partition_point(|r| r.start <= range.start);
        after > 0 && self.ranges[after - 1].ends_at_or_after(range)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(ranges: &[(&str, &str)]) -> RangeSet {
        RangeSet::new(ranges.iter().map(|(k, e)| KeyRange::of(k.as_bytes(), e.as_bytes())))
    }

    #[test]
    fn single_keys_prefixes_and_from_key() {
        let granted = set(&[("a", ""), ("foo", "fop"), ("x", "\0")]);
        assert!(granted.covers(&KeyRange::of(b"a", b"")));
        assert!(!granted.covers(&KeyRange::of(b"a", b"b")), "a alone does not cover [a, b)");
        assert!(granted.covers(&KeyRange::of(b"foo/bar", b"")));
        assert!(granted.covers(&KeyRange::of(b"foo", b"fop")));
        assert!(!granted.covers(&KeyRange::of(b"foo", b"foq")));
        assert!(granted.covers(&KeyRange::of(b"zzz", b"")));
        assert!(granted.covers(&KeyRange::of(b"x", b"\0")));
        assert!(!granted.covers(&KeyRange::of(b"w", b"\0")));
        assert!(!granted.covers(&KeyRange::of(b"b", b"")));
    }

    #[test]
    fn pieces_from_several_permissions_add_up() {
        let granted = set(&[("a", "c"), ("c", "e"), ("e", "")]);
        assert!(granted.covers(&KeyRange::of(b"a", b"e")));
        assert!(granted.covers(&KeyRange::of(b"a", b"e\0")), "the single key e closes the gap");
        assert!(!granted.covers(&KeyRange::of(b"a", b"f")));
    }

    fn naive_covers(granted: &[KeyRange], range: &KeyRange, probes: &[Vec<u8>]) -> bool {
        // Every probe key inside `range` must be inside some granted range.
        let inside = |r: &KeyRange, k: &Vec<u8>| *k >= r.start && r.end.as_ref().is_none_or(|e| k < e);
        probes.iter().filter(|k| inside(range, k)).all(|k| granted.iter().any(|g| inside(g, k)))
    }

    proptest! {
        // Keys over a two-letter alphabet of length up to 3: every boundary
        // that matters is among the probes.
        #[test]
        fn covers_agrees_with_checking_every_key(
            granted in proptest::collection::vec(("[ab]{0,3}", "[ab]{0,3}|\u{0}"), 0..5),
            requested in ("[ab]{1,3}", "[ab]{0,3}|\u{0}"),
        ) {
            let granted: Vec<KeyRange> = granted.iter().map(|(k, e)| KeyRange::of(k.as_bytes(), e.as_bytes())).collect();
            let requested = KeyRange::of(requested.0.as_bytes(), requested.1.as_bytes());
            prop_assume!(requested.end.as_ref().is_none_or(|e| *e > requested.start));
            prop_assume!(requested.end.is_some());
            let mut probes = Vec::new();
            for len in 0..=4 {
                for n in 0..(1u32 << len) {
                    probes.push((0..len).map(|i| if n >> i & 1 == 1 { b'b' } else { b'a' }).collect::<Vec<u8>>());
                }
            }
            // A gap in the union starts at the requested start or at the
            // end of a granted range: probing those finds any gap.
            probes.push(requested.start.clone());
            for r in &granted {
                probes.push(r.start.clone());
                probes.extend(r.end.clone());
            }
            let set = RangeSet::new(granted.clone());
            prop_assert_eq!(set.covers(&requested), naive_covers(&granted, &requested, &probes), "{:?} {:?}", granted, requested);
        }
    }
}
