//! Faults, chosen by the run's seeded RNG: each is applied, held for a few
//! seconds, then healed, with quiet time between them. A fault the machine
//! cannot inject (no iptables, no tc) is reported as skipped, once, and
//! never counted as having run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::cluster::{member_client, Cluster};
use super::net::Net;
use super::workload::Clock;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The leader cut off from both followers (iptables, both ways);
    /// clients still reach it.
    PartitionLeader,
    /// One follower cut off from the others: a minority of one.
    PartitionFollower,
    /// Two members cut off from each other while the third still talks to
    /// both (Jepsen's bridge: a non-transitive partition).
    Bridge,
    /// A member's veth taken down: cut off from peers and clients.
    LinkDown,
    /// Packet delay, jitter and loss on one member's interface (netem);
    /// where netem's kernel module is missing, its outgoing link slowed
    /// with a short queue (tbf), which delays and drops as a congested
    /// link does.
    Netem,
    /// Random packet loss on one member, both ways (iptables' statistic
    /// match), which works where netem's kernel module is missing.
    Loss,
    /// `kill -9` of a member (the leader half the time), restarted when healed.
    Kill,
    /// SIGSTOP of a member (the leader half the time), SIGCONT when healed.
    Pause,
    /// Leadership moved to a follower (Maintenance.MoveLeader).
    MoveLeader,
    /// A follower killed, its data wiped, removed from the cluster, added
    /// back as a learner under a new id, started empty and promoted once it
    /// caught up.
    Replace,
    /// A member's wall clock moved minutes forward or back (libfaketime),
    /// a third of the time across a `kill -9` and restart; its monotonic
    /// clock is left alone.
    ClockJump,
    /// `kill -9` of a member (the leader half the time) and its disk left
    /// as a power cut would: unsynced writes lost (`disk`). Restarted when
    /// healed.
    PowerLoss,
}

impl Fault {
    /// Every fault, in the order the RNG picks from. Faults this machine has
    /// no tool for are left out of the draw for both targets; a fault one
    /// target cannot take (a clock jump on etcd) stays in it and its turn
    /// passes without a fault, so one seed gives Keel and etcd the same
    /// faults at the same times.
    const ALL: [Fault; 12] = [
        Fault::Replace,
        Fault::PartitionLeader,
        Fault::PartitionFollower,
        Fault::Bridge,
        Fault::LinkDown,
        Fault::Netem,
        Fault::Loss,
        Fault::Kill,
        Fault::Pause,
        Fault::MoveLeader,
        Fault::ClockJump,
        Fault::PowerLoss,
    ];
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct Applied {
    pub fault: Fault,
    pub detail: String,
    /// Whether it took the leader away (partitioned, cut, killed, paused).
    pub on_leader: bool,
    /// When it was applied and healed (run clock, µs).
    pub start: u64,
    pub end: u64,
}

/// What the nemesis did, for the report.
#[derive(Default)]
pub struct Timeline {
    pub applied: Vec<Applied>,
    /// Faults that could not be injected here, with why.
    pub skipped: BTreeMap<Fault, String>,
    /// Faults whose injection failed part-way (reported, not counted).
    pub failed: Vec<(Fault, String)>,
    /// Members that exited by themselves, with the end of their log.
    pub crashed: Vec<(String, String)>,
    /// Turns of a skipped fault that passed without a fault.
    pub passed: BTreeMap<Fault, usize>,
}

pub struct Nemesis {
    rng: StdRng,
    clock: Clock,
    /// Why iptables or tc cannot be used, if so.
    no_iptables: Option<String>,
    no_statistic: Option<String>,
    /// Why neither netem nor tbf can be used, if so.
    no_tc: Option<String>,
    /// Whether the Netem fault has netem itself (else it uses tbf).
    netem: bool,
    no_clock: Option<String>,
    no_disks: Option<String>,
    pub timeline: Timeline,
}

impl Nemesis {
    /// `no_clock`, `no_disks`: why members' clocks cannot be moved, and why
    /// their disks cannot lose unsynced writes, if so.
    pub fn new(rng: StdRng, clock: Clock, net: &Net, no_clock: Option<String>, no_disks: Option<String>) -> Nemesis {
        let probed = net.probe();
        let (no_iptables, no_statistic, netem) = (probed.iptables, probed.statistic, probed.netem.is_none());
        // Without netem, the Netem fault slows a link with tbf instead.
        let no_tc = match (&probed.netem, &probed.tbf) {
            (Some(netem), Some(tbf)) => Some(format!("{netem}; and tbf: {tbf}")),
            (Some(netem), None) => {
                eprintln!("robustness: no netem ({netem}): the Netem nemesis slows links with tbf instead");
                None
            }
            _ => None,
        };
        let mut timeline = Timeline::default();
        for (fault, why) in [
            (Fault::PartitionLeader, &no_iptables),
            (Fault::PartitionFollower, &no_iptables),
            (Fault::Bridge, &no_iptables),
            (Fault::Netem, &no_tc),
            (Fault::Loss, &no_statistic),
            (Fault::ClockJump, &no_clock),
            (Fault::PowerLoss, &no_disks),
        ] {
            if let Some(why) = why {
                eprintln!("robustness: skipping the {fault:?} nemesis: {why}");
                timeline.skipped.insert(fault, why.clone());
            }
        }
        Nemesis { rng, clock, no_iptables, no_statistic, no_tc, netem, no_clock, no_disks, timeline }
    }

    /// Faults, one at a time, until `deadline`.
    pub async fn run(&mut self, cluster: &mut Cluster, net: &Net, deadline: Instant) {
        // Faults without a tool are left out of the draw; a fault that only
        // one target can take (a clock jump) stays in it (see `ALL`).
        let drawn: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|f| match f {
                Fault::PartitionLeader | Fault::PartitionFollower | Fault::Bridge => self.no_iptables.is_none(),
                Fault::Netem => self.no_tc.is_none(),
                Fault::Loss => self.no_statistic.is_none(),
                Fault::PowerLoss => self.no_disks.is_none(),
                _ => true,
            })
            .collect();
        loop {
            let quiet = Duration::from_millis(self.rng.gen_range(2_000..5_000));
            let hold = Duration::from_millis(self.rng.gen_range(2_000..8_000));
            // Leave time at the end for the last fault to heal inside the run.
            if Instant::now() + quiet + hold + Duration::from_secs(2) > deadline {
                break;
            }
            tokio::time::sleep(quiet).await;
            for (name, log) in cluster.crashed() {
                eprintln!("robustness: member {name} exited by itself:\n{log}");
                self.timeline.crashed.push((name, log));
            }
            let fault = *drawn.choose(&mut self.rng).expect("killing and pausing need no tool");
            if fault == Fault::ClockJump && self.no_clock.is_some() {
                // Its turn passes quietly, taking the draws `apply` would
                // have taken, so the faults after it stay those of the seed.
                let _ = (self.rng.gen_range(0..cluster.members.len()), self.rng.gen_bool(0.5));
                let _ = (self.rng.gen_range(1..=10i64), self.rng.gen_bool(0.5), self.rng.gen_bool(1.0 / 3.0));
                *self.timeline.passed.entry(fault).or_default() += 1;
                tokio::time::sleep(hold).await;
                continue;
            }
            match self.apply(fault, cluster, net).await {
                Ok((detail, on_leader)) => {
                    // From when the fault is in place (finding the leader
                    // first takes a few round trips).
                    let start = self.clock.now();
                    eprintln!("robustness: {:>6.1}s {fault:?} {detail}", start as f64 / 1e6);
                    tokio::time::sleep(hold).await;
                    if let Err(err) = heal(cluster, net) {
                        self.timeline.failed.push((fault, format!("healing: {err:#}")));
                    }
                    let end = self.clock.now();
                    self.timeline.applied.push(Applied { fault, detail, on_leader, start, end });
                }
                Err(err) => {
                    eprintln!("robustness: {fault:?} could not be applied: {err:#}");
                    let _ = heal(cluster, net);
                    self.timeline.failed.push((fault, format!("{err:#}")));
                }
            }
        }
    }

    /// Applies `fault`: what was done, and whether it hit the leader.
    async fn apply(&mut self, fault: Fault, cluster: &mut Cluster, net: &Net) -> Result<(String, bool)> {
        let members = cluster.members.len();
        let leader = leader(cluster).await;
        let any = self.rng.gen_range(0..members);
        // The leader half the time, when there is one: faults on it are the
        // ones that test elections.
        let target = match leader {
            Some((l, _)) if self.rng.gen_bool(0.5) => l,
            _ => any,
        };
        let on_leader = |i: usize| leader.is_some_and(|(l, _)| l == i);
        let others = |i: usize| (0..members).filter(move |&j| j != i).collect::<Vec<_>>();
        Ok(match fault {
            Fault::PartitionLeader => {
                let Some((l, _)) = leader else { bail!("no leader to isolate") };
                net.cut(l, &others(l))?;
                (format!("m{l} (leader) cut off from its peers"), true)
            }
            Fault::PartitionFollower => {
                let followers: Vec<usize> = (0..members).filter(|&i| Some(i) != leader.map(|l| l.0)).collect();
                let f = *followers.choose(&mut self.rng).expect("three members");
                net.cut(f, &others(f))?;
                (format!("m{f} cut off from its peers"), false)
            }
            Fault::Bridge => {
                let mut order: Vec<usize> = (0..members).collect();
                order.shuffle(&mut self.rng);
                let (a, b, hub) = (order[0], order[1], order[2]);
                net.cut(a, &[b])?;
                (format!("m{a} and m{b} cut from each other, m{hub} sees both"), false)
            }
            Fault::LinkDown => {
                net.link(target, false)?;
                (format!("m{target}'s link down"), on_leader(target))
            }
            Fault::Netem if self.netem => {
                let (delay, jitter, loss) =
                    (self.rng.gen_range(20..200), self.rng.gen_range(0..50), self.rng.gen_range(0..30));
                net.netem(target, delay, jitter, loss)?;
                (format!("m{target}: delay {delay}ms ±{jitter}ms, loss {loss}%"), false)
            }
            Fault::Netem => {
                let (rate, latency) = (self.rng.gen_range(64..1024), self.rng.gen_range(20..300));
                net.slow_link(target, rate, latency)?;
                (format!("m{target}: sends at {rate} kbit/s, queueing at most {latency}ms (tbf)"), false)
            }
            Fault::Loss => {
                let loss = self.rng.gen_range(10..60);
                net.loss(target, loss)?;
                (format!("m{target}: {loss}% of packets dropped both ways"), false)
            }
            Fault::Kill => {
                cluster.kill(target)?;
                (format!("m{target} killed (kill -9)"), on_leader(target))
            }
            Fault::PowerLoss => {
                cluster.lose_unsynced(target)?;
                (format!("m{target} killed (kill -9) and its unsynced writes lost"), on_leader(target))
            }
            Fault::Pause => {
                cluster.signal_pause(target, true)?;
                (format!("m{target} paused (SIGSTOP)"), on_leader(target))
            }
            Fault::Replace => {
                let Some((l, _)) = leader else { bail!("no leader to replace a member through") };
                let t = *others(l).choose(&mut self.rng).expect("three members");
                let ids = member_ids(cluster).await?;
                let client = member_client(&cluster.members[l].endpoint, Duration::from_secs(5)).await?;
                // Killed first, so that the removal never finds it running
                // (a removed member stops itself, which would look like a
                // crash); wiped only once removed: a member still in the
                // cluster that lost its raft log is a disk failure, which
                // raft answers with a panic (etcd's "tocommit is out of
                // range"). A refused removal leaves it to be restarted whole.
                cluster.kill(t)?;
                if let Err(err) = client.member_remove(ids[t]).await {
                    // A removal that timed out may still have been applied;
                    // restarting a removed member on its old data would
                    // only see it refused, so ask the cluster.
                    if listed(cluster, l, ids[t]).await? {
                        return Err(err.into());
                    }
                }
                cluster.wipe(t)?;
                let peer_url = cluster.members[t].peer_url.clone();
                let deadline = Instant::now() + Duration::from_secs(20);
                let added = loop {
                    match client.member_add(vec![peer_url.clone()], true).await {
                        Ok(added) => break added,
                        Err(err) if Instant::now() > deadline => bail!("m{t} removed but not added back: {err}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                };
                let new_id = added.member.map_or(0, |m| m.id);
                cluster.restart(t)?;
                // A learner is promoted only once it has caught up.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    match client.member_promote(new_id).await {
                        Ok(_) => break,
                        Err(err) if Instant::now() > deadline => {
                            bail!("m{t} added back as learner {new_id:x} but not promoted: {err}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                (format!("m{t} removed, wiped, added back as learner {new_id:x} and promoted"), false)
            }
            Fault::ClockJump => {
                let minutes: i64 = self.rng.gen_range(1..=10) * if self.rng.gen_bool(0.5) { 1 } else { -1 };
                let restart = self.rng.gen_bool(1.0 / 3.0);
                cluster.jump_clock(target, minutes * 60)?;
                if restart {
                    // A new incarnation whose wall clock may be behind its
                    // last one's: ids taken from the clock must not repeat.
                    cluster.kill(target)?;
                    cluster.restart(target)?;
                }
                let how = if restart { ", then killed and restarted" } else { "" };
                (format!("m{target}'s wall clock moved {minutes:+} min{how}"), restart && on_leader(target))
            }
            Fault::MoveLeader => {
                let Some((l, _)) = leader else { bail!("no leader to move") };
                let to = *others(l).choose(&mut self.rng).expect("three members");
                let ids = member_ids(cluster).await?;
                let client = member_client(&cluster.members[l].endpoint, Duration::from_secs(5)).await?;
                client.move_leader(ids[to]).await?;
                (format!("leadership moved m{l} -> m{to}"), false)
            }
        })
    }
}

/// Undoes every fault.
pub fn heal(cluster: &mut Cluster, net: &Net) -> Result<()> {
    let network = net.heal();
    cluster.heal()?;
    network
}

/// The member that leads, by index, and its id: the one whose status names
/// itself as leader.
/// Tries for up to 3 s: right after a fault healed there may be none yet.
pub async fn leader(cluster: &Cluster) -> Option<(usize, u64)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for (i, member) in cluster.members.iter().enumerate() {
            if !cluster.running(i) {
                continue;
            }
            let Ok(client) = member_client(&member.endpoint, Duration::from_secs(1)).await else { continue };
            let Ok(status) = client.status().await else { continue };
            let id = status.header.map_or(0, |h| h.member_id);
            if id != 0 && status.leader == id {
                return Some((i, id));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Whether the cluster still lists member `id`, asking the leader `l`
/// first (a follower's list may lag), then the others, for up to 10 s.
async fn listed(cluster: &Cluster, l: usize, id: u64) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let order: Vec<usize> = std::iter::once(l).chain((0..cluster.members.len()).filter(|&i| i != l)).collect();
    while Instant::now() < deadline {
        for member in order.iter().map(|&i| &cluster.members[i]) {
            let Ok(client) = member_client(&member.endpoint, Duration::from_secs(2)).await else { continue };
            if let Ok(list) = client.member_list(true).await {
                return Ok(list.members.iter().any(|m| m.id == id));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("no member answered a member list within 10 s")
}

/// Each member's id, in member order (names are `m<i>`).
async fn member_ids(cluster: &Cluster) -> Result<Vec<u64>> {
    for member in &cluster.members {
        let Ok(client) = member_client(&member.endpoint, Duration::from_secs(2)).await else { continue };
        let Ok(list) = client.member_list(false).await else { continue };
        let mut ids = vec![0; cluster.members.len()];
        for m in list.members {
            if let Some(i) = m.name.strip_prefix('m').and_then(|n| n.parse::<usize>().ok()) {
                if i < ids.len() {
                    ids[i] = m.id;
                }
            }
        }
        if ids.iter().all(|&id| id != 0) {
            return Ok(ids);
        }
    }
    bail!("no member listed every member's id")
}
