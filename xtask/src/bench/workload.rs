//! What a run sends: etcd benchmark's workloads, and the keys, values and random
//! choices they use. Everything here is pure; keys and the value are generated
//! once, before the clock starts, so a request costs only its own allocation.

use anyhow::{bail, Result};
use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};

/// One of etcd's `benchmark` commands, with its command-specific flags.
#[derive(Clone, Debug)]
pub enum Workload {
    /// `benchmark put`: one key per request, at random from the key space or in order.
    Put { key_space: usize, sequential: bool },
    /// `benchmark range`: the same Range request every time.
    Range { key: Vec<u8>, end: Vec<u8>, serializable: bool, limit: i64, count_only: bool },
    /// `benchmark txn-put`: a Txn with no compares and `ops` puts on consecutive keys.
    TxnPut { key_space: usize, ops: usize },
    /// `benchmark txn-mixed`: each request is a Txn holding one Range (all keys
    /// from "\0" up to `end`, or every key when `end` is empty, at most `limit`)
    /// with probability rw/(1+rw), else one Put of key `n % key_space`.
    TxnMixed { key_space: usize, rw_ratio: f64, end: Vec<u8>, limit: i64, serializable: bool },
    /// Ours (`bench scale`): request `n` puts key `n`, with a value of random
    /// bytes of its own, so that a compressing store is not flattered.
    Fill { keys: usize },
}

/// Which summaries a command prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    Reads,
    Writes,
    /// txn-mixed: reads, then writes.
    Both,
}

impl Workload {
    pub fn reported(&self) -> Reported {
        match self {
            Workload::Put { .. } | Workload::TxnPut { .. } | Workload::Fill { .. } => Reported::Writes,
            Workload::Range { .. } => Reported::Reads,
            Workload::TxnMixed { .. } => Reported::Both,
        }
    }

    fn key_space(&self) -> usize {
        match self {
            Workload::Put { key_space, .. }
            | Workload::TxnPut { key_space, .. }
            | Workload::TxnMixed { key_space, .. } => *key_space,
            Workload::Fill { keys } => *keys,
            Workload::Range { .. } => 0,
        }
    }
}

/// A workload and the load shape: how much, how concurrent, how big.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workload: Workload,
    pub total: usize,
    pub clients: usize,
    pub conns: usize,
    pub key_size: usize,
    pub val_size: usize,
}

impl Plan {
    /// The checks etcd's tool makes, plus ours: every key must fit `key_size`.
    pub fn validate(&self) -> Result<()> {
        if self.clients == 0 || self.conns == 0 {
            bail!("--clients and --conns must be positive");
        }
        match &self.workload {
            Workload::Range { .. } => return Ok(()),
            Workload::TxnPut { key_space, ops } => {
                if *ops == 0 {
                    bail!("expected positive --txn-ops, got {ops}");
                }
                if ops > key_space {
                    bail!("expected --txn-ops no larger than --key-space-size, got txn-ops({ops}) key-space-size({key_space})");
                }
            }
            Workload::TxnMixed { rw_ratio, .. } => {
                if !rw_ratio.is_finite() || *rw_ratio < 0.0 {
                    bail!("expected a finite, non-negative --rw-ratio, got {rw_ratio}");
                }
            }
            Workload::Put { .. } | Workload::Fill { .. } => {}
        }
        let key_space = self.workload.key_space();
        if key_space == 0 {
            bail!("expected positive --key-space-size, got 0");
        }
        check_key_size(key_space, self.key_size)
    }
}

/// Keys are `key_size`-byte zero-padded decimals ("00000042"), so byte order is
/// numeric order: the first N keys are the contiguous range [key(0), key(N)).
/// (etcd's tool writes varints, which do not sort; the servers cannot tell.)
pub struct KeySet {
    bytes: Vec<u8>,
    key_size: usize,
}

impl KeySet {
    /// Keys `0..count`, in one buffer.
    pub fn new(count: usize, key_size: usize) -> Result<Self> {
        check_key_size(count, key_size)?;
        let mut bytes = Vec::with_capacity(count * key_size);
        for n in 0..count {
            bytes.extend_from_slice(&key(n, key_size));
        }
        Ok(KeySet { bytes, key_size })
    }

    pub fn get(&self, n: usize) -> &[u8] {
        &self.bytes[n * self.key_size..(n + 1) * self.key_size]
    }
}

/// Key number `n`, zero-padded to `key_size` bytes.
pub fn key(n: usize, key_size: usize) -> Vec<u8> {
    format!("{n:0key_size$}").into_bytes()
}

/// `count` keys need `digits(count - 1)` bytes each.
pub fn check_key_size(count: usize, key_size: usize) -> Result<()> {
    let needed = digits(count.saturating_sub(1));
    if key_size < needed {
        bail!("--key-size {key_size} cannot hold {count} distinct keys (needs {needed} bytes)");
    }
    Ok(())
}

/// Decimal digits of `n`.
pub fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// xorshift64*: deterministic per client, no locking, no allocation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Any non-zero state works; spread small seeds over the whole word.
        Rng((seed.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-40 for any key space we use).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// etcd's txn-mixed split: a read when `unit` < rw/(1+rw), so reads:writes = rw:1.
pub fn is_read(unit: f64, rw_ratio: f64) -> bool {
    unit < rw_ratio / (1.0 + rw_ratio)
}

/// Key numbers of txn-put request `n`: `ops` consecutive keys, wrapping at the
/// key space (distinct as long as `ops <= key_space`, which etcd requires).
pub fn txn_put_keys(n: usize, ops: usize, key_space: usize) -> impl Iterator<Item = usize> {
    (0..ops).map(move |j| (n * ops + j) % key_space)
}

/// Which latency histogram a request belongs to (txn-mixed reports both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
}

/// A request ready to send.
#[derive(Debug, PartialEq)]
pub enum Request {
    Put(PutRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
}

/// Builds requests for one client: everything shared is generated here, once.
pub struct Generator {
    workload: Workload,
    keys: KeySet,
    value: Vec<u8>,
    /// The Range of `range` and of txn-mixed reads, cloned per request.
    range: RangeRequest,
}

impl Generator {
    pub fn new(plan: &Plan) -> Result<Self> {
        plan.validate()?;
        let range = match &plan.workload {
            Workload::Range { key, end, serializable, limit, count_only } => RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                serializable: *serializable,
                limit: *limit,
                count_only: *count_only,
                ..Default::default()
            },
            // etcd's `OpGet("", WithPrefix(), ...)`: from "\0" to the end key, or to everything.
            Workload::TxnMixed { end, limit, serializable, .. } => RangeRequest {
                key: vec![0],
                range_end: if end.is_empty() { vec![0] } else { end.clone() },
                serializable: *serializable,
                limit: *limit,
                ..Default::default()
            },
            Workload::Put { .. } | Workload::TxnPut { .. } | Workload::Fill { .. } => RangeRequest::default(),
        };
        Ok(Generator {
            keys: KeySet::new(plan.workload.key_space(), plan.key_size)?,
            value: vec![b'v'; plan.val_size],
            workload: plan.workload.clone(),
            range,
        })
    }

    /// Request number `n` of the run (numbers are global across clients, as in
    /// etcd's tool, where one feeder numbers them); `rng` is the client's own.
    pub fn request(&self, n: usize, rng: &mut Rng) -> (Class, Request) {
        match &self.workload {
            Workload::Put { key_space, sequential } => {
                let k = if *sequential { n % key_space } else { rng.below(*key_space) };
                (Class::Write, Request::Put(self.put(k)))
            }
            Workload::Range { .. } => (Class::Read, Request::Range(self.range.clone())),
            Workload::Fill { .. } => {
                let put = PutRequest {
                    key: self.keys.get(n).to_vec(),
                    value: value_of(n, self.value.len()),
                    ..Default::default()
                };
                (Class::Write, Request::Put(put))
            }
            Workload::TxnPut { key_space, ops } => {
                let success = txn_put_keys(n, *ops, *key_space).map(|k| op(Op::RequestPut(self.put(k)))).collect();
                (Class::Write, Request::Txn(TxnRequest { success, ..Default::default() }))
            }
            Workload::TxnMixed { key_space, rw_ratio, .. } => {
                let (class, single) = if is_read(rng.unit(), *rw_ratio) {
                    (Class::Read, Op::RequestRange(self.range.clone()))
                } else {
                    (Class::Write, Op::RequestPut(self.put(n % key_space)))
                };
                (class, Request::Txn(TxnRequest { success: vec![op(single)], ..Default::default() }))
            }
        }
    }

    fn put(&self, k: usize) -> PutRequest {
        PutRequest { key: self.keys.get(k).to_vec(), value: self.value.clone(), ..Default::default() }
    }
}

/// The value of key `n` in a fill: random bytes of its own, the same in every run.
pub fn value_of(n: usize, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(n as u64 ^ 0x5ca1e);
    let mut value = Vec::with_capacity(size + 8);
    while value.len() < size {
        value.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    value.truncate(size);
    value
}

fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workload: Workload) -> Plan {
        Plan { workload, total: 100, clients: 1, conns: 1, key_size: 8, val_size: 4 }
    }

    #[test]
    fn fill_values_are_random_distinct_and_repeatable() {
        assert_eq!(value_of(1, 256).len(), 256);
        assert_eq!(value_of(5, 3).len(), 3);
        assert_eq!(value_of(1, 256), value_of(1, 256));
        assert_ne!(value_of(1, 256), value_of(2, 256));
        let v = value_of(9, 256);
        let distinct: std::collections::BTreeSet<u8> = v.iter().copied().collect();
        assert!(distinct.len() > 100, "{} distinct bytes", distinct.len());
        // A fill puts key n with its own value.
        let plan =
            Plan { workload: Workload::Fill { keys: 10 }, total: 10, clients: 1, conns: 1, key_size: 2, val_size: 16 };
        let generator = Generator::new(&plan).unwrap();
        let (class, Request::Put(put)) = generator.request(7, &mut Rng::new(0)) else { panic!("a fill puts") };
        assert_eq!((class, put.key, put.value), (Class::Write, b"07".to_vec(), value_of(7, 16)));
    }

    #[test]
    fn keys_are_zero_padded_and_sort_numerically() {
        let keys = KeySet::new(1001, 4).unwrap();
        assert_eq!(keys.get(0), b"0000");
        assert_eq!(keys.get(42), b"0042");
        assert_eq!(keys.get(1000), b"1000");
        assert!((1..1001).all(|n| keys.get(n - 1) < keys.get(n)));
        assert_eq!(key(7, 3), b"007");
    }

    #[test]
    fn key_size_must_hold_the_key_space() {
        assert!(KeySet::new(1000, 3).is_ok());
        assert!(KeySet::new(1001, 3).is_err());
        assert!(KeySet::new(1, 1).is_ok());
        assert!(KeySet::new(0, 1).is_ok());
        assert_eq!((digits(0), digits(9), digits(10), digits(99_999)), (1, 1, 2, 5));
    }

    #[test]
    fn rng_is_uniform_enough_and_in_range() {
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[rng.below(10)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
        let mut rng = Rng::new(0);
        assert!((0..10_000).map(|_| rng.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn rw_ratio_splits_reads_and_writes() {
        assert!(!is_read(0.0, 0.0), "ratio 0: writes only");
        assert!(is_read(0.49, 1.0) && !is_read(0.5, 1.0));
        for (ratio, expected) in [(1.0, 0.5), (4.0, 0.8), (0.25, 0.2)] {
            let mut rng = Rng::new(7);
            let reads = (0..100_000).filter(|_| is_read(rng.unit(), ratio)).count();
            let share = reads as f64 / 100_000.0;
            assert!((share - expected).abs() < 0.01, "ratio {ratio}: read share {share}");
        }
    }

    #[test]
    fn txn_put_keys_are_consecutive_and_wrap() {
        assert_eq!(txn_put_keys(0, 3, 10).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(txn_put_keys(3, 3, 10).collect::<Vec<_>>(), [9, 0, 1]);
        assert_eq!(txn_put_keys(5, 1, 1).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn validation_mirrors_etcd() {
        assert!(plan(Workload::TxnPut { key_space: 2, ops: 3 }).validate().is_err());
        assert!(plan(Workload::TxnPut { key_space: 3, ops: 0 }).validate().is_err());
        assert!(plan(Workload::Put { key_space: 0, sequential: false }).validate().is_err());
        let mixed =
            |rw_ratio| Workload::TxnMixed { key_space: 1, rw_ratio, end: vec![], limit: 1000, serializable: false };
        assert!(plan(mixed(f64::INFINITY)).validate().is_err());
        assert!(plan(mixed(-1.0)).validate().is_err());
        assert!(plan(mixed(0.5)).validate().is_ok());
    }

    #[test]
    fn sequential_puts_walk_the_key_space() {
        let generator = Generator::new(&plan(Workload::Put { key_space: 3, sequential: true })).unwrap();
        let mut rng = Rng::new(0);
        let keys: Vec<Vec<u8>> = (0..4)
            .map(|n| match generator.request(n, &mut rng) {
                (Class::Write, Request::Put(put)) => {
                    assert_eq!(put.value, b"vvvv");
                    put.key
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, [b"00000000", b"00000001", b"00000002", b"00000000"]);
    }

    #[test]
    fn txn_mixed_reads_everything_up_to_the_limit() {
        let workload =
            Workload::TxnMixed { key_space: 10, rw_ratio: 1.0, end: vec![], limit: 1000, serializable: true };
        let generator = Generator::new(&plan(workload)).unwrap();
        let mut rng = Rng::new(1);
        let (mut reads, mut writes) = (0, 0);
        for n in 0..1000 {
            let (class, Request::Txn(txn)) = generator.request(n, &mut rng) else { panic!("not a txn") };
            assert!(txn.compare.is_empty() && txn.failure.is_empty());
            match (class, &txn.success[..]) {
                (Class::Read, [RequestOp { request: Some(Op::RequestRange(range)) }]) => {
                    assert_eq!((&range.key[..], &range.range_end[..], range.limit), (&[0][..], &[0][..], 1000));
                    assert!(range.serializable);
                    reads += 1;
                }
                (Class::Write, [RequestOp { request: Some(Op::RequestPut(put)) }]) => {
                    assert_eq!(put.key, key(n % 10, 8));
                    writes += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((400..600).contains(&reads), "{reads} reads, {writes} writes");
    }
}
