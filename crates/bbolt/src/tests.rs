use std::io::Cursor;

use proptest::prelude::*;

use crate::format::{u64_at, PageHeader, PAGE_HEADER_SIZE};
use crate::{Db, Error, Options, Writer};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn write(buckets: &[(&[u8], Pairs)], options: Options) -> Vec<u8> {
    let mut w = Writer::with_options(Cursor::new(Vec::new()), options).unwrap();
    for (name, pairs) in buckets {
        w.begin_bucket(name).unwrap();
        for (k, v) in pairs {
            w.put(k, v).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn read_all(bytes: Vec<u8>) -> crate::Result<Vec<(Vec<u8>, Pairs)>> {
    let mut db = Db::from_reader(Cursor::new(bytes))?;
    let mut out = Vec::new();
    for bucket in db.buckets()? {
        let pairs = db.entries(&bucket).collect::<crate::Result<Pairs>>()?;
        out.push((bucket.name().to_vec(), pairs));
    }
    Ok(out)
}

fn round_trip(buckets: Vec<(&[u8], Pairs)>, options: Options) {
    let bytes = write(&buckets, options);
    assert_eq!(bytes.len() % options.page_size as usize, 0);
    let back = read_all(bytes).unwrap();
    let want: Vec<(Vec<u8>, Pairs)> = buckets.into_iter().map(|(n, p)| (n.to_vec(), p)).collect();
    assert_eq!(back.len(), want.len());
    for (got, want) in back.iter().zip(&want) {
        assert_eq!(got.0, want.0);
        assert_eq!(got.1.len(), want.1.len(), "bucket {:?}", String::from_utf8_lossy(&want.0));
        assert!(got.1 == want.1, "bucket {:?} differs", String::from_utf8_lossy(&want.0));
    }
}

fn revision_key(main: u64, sub: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

fn etcd_like(keys: u64, value: impl Fn(u64) -> Vec<u8>) -> Vec<(&'static [u8], Pairs)> {
    vec![
        (b"alarm", vec![]),
        (b"auth", vec![(b"authEnabled".to_vec(), vec![0])]),
        (b"authRoles", vec![]),
        (b"authUsers", vec![]),
        (b"cluster", vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())]),
        (b"key", (1..=keys).map(|r| (revision_key(r, 0), value(r))).collect()),
        (b"lease", vec![]),
        (b"members", vec![(b"8e9e05c52164694d".to_vec(), br#"{"id":1}"#.to_vec())]),
        (b"members_removed", vec![]),
        (b"meta", vec![(b"consistent_index".to_vec(), 9u64.to_be_bytes().to_vec())]),
    ]
}

#[test]
fn empty_file_has_no_buckets() {
    round_trip(vec![], Options::default());
    let bytes = write(&[], Options::default());
    assert_eq!(bytes.len(), 3 * 4096);
    let db = Db::from_reader(Cursor::new(bytes)).unwrap();
    assert_eq!(db.meta().pgid, 3);
    assert_eq!(db.meta().freelist, u64::MAX);
}

#[test]
fn small_buckets_are_inline_large_ones_are_not() {
    let buckets = etcd_like(200, |r| format!("value {r}").into_bytes());
    let bytes = write(&buckets, Options::default());
    let mut db = Db::from_reader(Cursor::new(bytes)).unwrap();
    for b in db.buckets().unwrap() {
        assert_eq!(b.is_inline(), b.name() != b"key", "{:?}", String::from_utf8_lossy(b.name()));
    }
}

#[test]
fn buckets_with_empty_values_round_trip() {
    let pairs = |n: u32| (0..n).map(|i| (format!("k{i:05}").into_bytes(), Vec::new())).collect::<Pairs>();
    round_trip(vec![(b"a", pairs(3)), (b"b", pairs(0)), (b"c", pairs(5000)), (b"d", pairs(1))], Options::default());
}

#[test]
fn values_larger_than_a_page_go_to_overflow_pages() {
    let big = |r: u64| vec![(r % 251) as u8; if r % 3 == 0 { 100_000 + r as usize } else { 10 }];
    let buckets = etcd_like(60, big);
    round_trip(buckets.clone(), Options::default());
    // Some leaf really spans several pages.
    let bytes = write(&buckets, Options::default());
    let overflowing = bytes.chunks(4096).skip(2).filter(|p| PageHeader::read(p).overflow > 0).count();
    assert!(overflowing >= 20, "{overflowing}");
}

#[test]
fn a_hundred_thousand_keys_need_branch_levels() {
    let buckets = etcd_like(100_000, |r| format!("value of revision {r}").into_bytes());
    round_trip(buckets.clone(), Options::default());
    round_trip(buckets.clone(), Options { page_size: 4096, fill_percent: 0.5 });
    // At 50% fill the key tree is three levels: leaves, branches, a root branch.
    let bytes = write(&buckets, Options { page_size: 4096, fill_percent: 0.5 });
    let mut db = Db::from_reader(Cursor::new(bytes.clone())).unwrap();
    let key = db.bucket(b"key").unwrap().unwrap();
    assert!(!key.is_inline());
    let branches = bytes.chunks(4096).skip(2).filter(|p| PageHeader::read(p).flags == 1).count();
    assert!(branches > 2, "{branches}");
}

#[test]
fn big_keys_overflow_branch_pages_too() {
    let pairs: Pairs =
        (0..200u32).map(|i| (format!("{i:05}").repeat(2000).into_bytes(), i.to_le_bytes().to_vec())).collect();
    round_trip(vec![(b"wide", pairs)], Options::default());
}

#[test]
fn other_page_sizes_round_trip() {
    for page_size in [1024, 16384, 65536] {
        round_trip(etcd_like(3000, |r| r.to_be_bytes().to_vec()), Options { page_size, fill_percent: 0.9 });
    }
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    assert!(matches!(w.put(b"k", b"v"), Err(Error::Invalid(_))));
    assert!(matches!(w.begin_bucket(b""), Err(Error::Invalid(_))));
    w.begin_bucket(b"b").unwrap();
    assert!(matches!(w.begin_bucket(b"a"), Err(Error::Order { .. })));
    assert!(matches!(w.begin_bucket(b"b"), Err(Error::Order { .. })));
    assert!(matches!(w.put(b"", b"v"), Err(Error::Invalid(_))));
    w.put(b"k2", b"v").unwrap();
    assert!(matches!(w.put(b"k2", b"v"), Err(Error::Order { .. })));
    assert!(matches!(w.put(b"k1", b"v"), Err(Error::Order { .. })));
    assert!(matches!(w.put(&[1; 32769], b"v"), Err(Error::Invalid(_))));
    let err = Writer::with_options(Cursor::new(Vec::new()), Options { page_size: 1000, fill_percent: 1.0 }).err();
    assert!(matches!(err, Some(Error::Invalid(_))));
}

fn sample() -> Vec<u8> {
    write(&etcd_like(2000, |r| vec![7; (r % 50) as usize]), Options::default())
}

fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Rewrites both metas' checksums after editing them.
fn reseal(bytes: &mut [u8]) {
    for page in 0..2 {
        let at = page * 4096 + PAGE_HEADER_SIZE;
        let mut m = crate::format::Meta::decode(bytes[at..at + 64].try_into().unwrap());
        m.checksum = m.sum();
        bytes[at..at + 64].copy_from_slice(&m.encode());
    }
}

#[test]
fn not_bbolt_files_are_named_so() {
    for bytes in [Vec::new(), vec![0; 10], vec![0; 8192], b"hello world".repeat(1000)] {
        let err = read_all(bytes).err().unwrap();
        assert!(matches!(err, Error::NotBbolt(_)), "{err}");
        assert!(err.to_string().starts_with("not a bbolt file"), "{err}");
    }
}

#[test]
fn a_bad_checksum_falls_back_to_the_other_meta_then_fails() {
    let mut bytes = sample();
    bytes[4096 + PAGE_HEADER_SIZE + 48] ^= 1; // meta 1's txid
    let db = Db::from_reader(Cursor::new(bytes.clone())).unwrap();
    assert_eq!(db.meta().txid, 0, "meta 0 is used");
    bytes[PAGE_HEADER_SIZE + 48] ^= 1;
    let err = read_all(bytes).err().unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn another_version_is_refused() {
    let mut bytes = sample();
    for page in 0..2 {
        bytes[page * 4096 + PAGE_HEADER_SIZE + 4] = 1;
    }
    reseal(&mut bytes);
    assert!(matches!(read_all(bytes), Err(Error::Version(1))));
}

#[test]
fn truncated_files_are_corrupt() {
    let bytes = sample();
    for len in [4096 * 2 + 100, bytes.len() / 2, bytes.len() - 1] {
        let err = read_all(bytes[..len].to_vec()).err().unwrap();
        assert!(matches!(err, Error::Corrupt(_)), "{len}: {err}");
    }
}

#[test]
fn out_of_range_pgids_are_corrupt() {
    let mut bytes = sample();
    let hwm = u64_at(&bytes, PAGE_HEADER_SIZE + 40);
    for (root, what) in [(hwm, "outside"), (1, "outside"), (u64::MAX / 2, "outside")] {
        for page in 0..2 {
            set_u64(&mut bytes, page * 4096 + PAGE_HEADER_SIZE + 16, root);
        }
        reseal(&mut bytes);
        let err = read_all(bytes.clone()).err().unwrap();
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_branch_pointing_at_itself_is_a_cycle() {
    let mut bytes = write(&etcd_like(5000, |_| vec![1; 20]), Options::default());
    let (at, id) = bytes
        .chunks(4096)
        .enumerate()
        .skip(2)
        .find(|(_, p)| PageHeader::read(p).flags == 1)
        .map(|(i, _)| (i * 4096, i as u64))
        .unwrap();
    set_u64(&mut bytes, at + PAGE_HEADER_SIZE + 8, id);
    let err = read_all(bytes).err().unwrap();
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[test]
fn a_page_referenced_twice_breaks_key_order() {
    let mut bytes = write(&etcd_like(5000, |_| vec![1; 20]), Options::default());
    let at = bytes.chunks(4096).position(|p| PageHeader::read(p).flags == 1 && PageHeader::read(p).count > 2).unwrap()
        * 4096;
    let first = u64_at(&bytes, at + PAGE_HEADER_SIZE + 8);
    set_u64(&mut bytes, at + PAGE_HEADER_SIZE + 16 + 8, first);
    let err = read_all(bytes).err().unwrap();
    assert!(err.to_string().contains("out of order"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random damage gives a result or an error, never a panic or a hang.
    #[test]
    fn random_byte_flips_never_panic(flips in proptest::collection::vec((0usize..1 << 20, any::<u8>()), 1..8)) {
        let mut bytes = sample();
        let len = bytes.len();
        for (at, x) in flips {
            bytes[at % len] ^= x | 1;
        }
        let _ = read_all(bytes.clone());
        reseal(&mut bytes);
        let _ = read_all(bytes);
    }

    #[test]
    fn random_buckets_round_trip(buckets in proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 1..6),
        proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..40), proptest::collection::vec(any::<u8>(), 0..300), 0..200),
        0..6,
    )) {
        let owned: Vec<(Vec<u8>, Pairs)> = buckets.into_iter().map(|(n, m)| (n, m.into_iter().collect())).collect();
        let borrowed: Vec<(&[u8], Pairs)> = owned.iter().map(|(n, p)| (n.as_slice(), p.clone())).collect();
        let bytes = write(&borrowed, Options { page_size: 1024, fill_percent: 0.5 });
        prop_assert_eq!(read_all(bytes).unwrap(), owned);
    }
}
