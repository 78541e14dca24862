//! The lab's network: one namespace per member, each joined to a bridge in
//! the root namespace by a veth pair, on a private /24 that only this run
//! uses. Clients run in the root namespace and reach members through the
//! bridge's address, so faults between members (iptables inside a member's
//! namespace, netem on its interface) leave the client's path alone unless
//! a nemesis means to cut it (the veth taken down).
//!
//! Everything is named after this process's pid (`krb-<pid>-m<i>`,
//! `krb<pid>`, `krb<pid>h<i>`), which lets [`sweep_stale`] remove what a
//! run killed with SIGKILL left behind, and nothing else.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

const PREFIX: &str = "krb";

/// Runs `program args…`, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = output(program, args)?;
    if !output.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))
}

/// Runs a command inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Best effort, for cleanup: the error is printed, not returned, so one
/// failed step does not stop the others.
fn try_run(program: &str, args: &[&str]) {
    if let Err(err) = run(program, args) {
        eprintln!("robustness: cleanup: {err:#}");
    }
}

/// Whether this machine lets us make network namespaces, and if not why.
pub fn netns_unavailable() -> Option<String> {
    let probe = format!("{PREFIX}-probe-{}", std::process::id());
    match run("ip", &["netns", "add", &probe]) {
        Ok(_) => {
            let _ = run("ip", &["netns", "del", &probe]);
            None
        }
        Err(err) => Some(format!("{err:#}")),
    }
}

/// Removes namespaces, bridges and member processes left by runs whose
/// process is gone (killed with SIGKILL, or the machine's shell cut).
pub fn sweep_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(&format!("{PREFIX}-")).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_err() || std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        eprintln!("robustness: removing {name}, left by an earlier run (pid {pid})");
        kill_all_in(name);
        try_run("ip", &["netns", "del", name]);
        let bridge = format!("{PREFIX}{pid}");
        let _ = output("iptables", &forward_rule("-D", &bridge));
        let _ = output("ip", &["link", "del", &bridge]);
    }
}

/// The root namespace's rule letting members talk across the bridge: with
/// `br_netfilter` loaded (Docker loads it) bridged packets go through the
/// FORWARD chain, whose policy Docker sets to DROP.
fn forward_rule<'a>(action: &'a str, bridge: &'a str) -> [&'a str; 9] {
    ["-w", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
}

/// SIGKILLs every process inside namespace `ns`.
fn kill_all_in(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = output("kill", &["-KILL", pid]);
        }
    }
}

/// The lab network. Dropping it removes it.
pub struct Net {
    bridge: String,
    /// Whether the FORWARD rule for the bridge was added (and must go).
    forward: bool,
    /// Namespace, host-side veth and address of each member.
    pub members: Vec<Slot>,
    /// The bridge's address, the clients' side.
    pub host: Ipv4Addr,
}

/// One member's place on the network.
pub struct Slot {
    /// Its namespace.
    pub ns: String,
    /// The veth end on the bridge, in the root namespace.
    pub host_link: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

impl Net {
    /// Creates the bridge and `members` namespaces. A failure part-way
    /// removes what was made.
    pub fn create(members: usize) -> Result<Net> {
        let pid = std::process::id();
        // One /24 per run, chosen by pid, inside 10.231.0.0/16.
        let third = (pid % 250 + 1) as u8;
        let host = Ipv4Addr::new(10, 231, third, 1);
        let mut net = Net { bridge: format!("{PREFIX}{pid}"), forward: false, members: Vec::new(), host };
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run("iptables", &forward_rule("-I", &net.bridge))?;
        net.forward = true;
        run("ip", &["addr", "add", &format!("{host}/24"), "dev", &net.bridge])?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 0..members {
            let slot = Slot {
                ns: format!("{PREFIX}-{pid}-m{i}"),
                host_link: format!("{PREFIX}{pid}h{i}"),
                ip: Ipv4Addr::new(10, 231, third, 11 + i as u8),
            };
            let inner = format!("{PREFIX}{pid}n{i}");
            run("ip", &["netns", "add", &slot.ns])?;
            net.members.push(slot);
            let slot = net.members.last().expect("just pushed");
            run("ip", &["link", "add", &slot.host_link, "type", "veth", "peer", "name", &inner])?;
            run("ip", &["link", "set", &inner, "netns", &slot.ns])?;
            run("ip", &["link", "set", &slot.host_link, "master", &net.bridge])?;
            run("ip", &["link", "set", &slot.host_link, "up"])?;
            in_ns(&slot.ns, "ip", &["link", "set", &inner, "name", "eth0"])?;
            in_ns(&slot.ns, "ip", &["addr", "add", &format!("{}/24", slot.ip), "dev", "eth0"])?;
            in_ns(&slot.ns, "ip", &["link", "set", "eth0", "up"])?;
            in_ns(&slot.ns, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Drops all traffic between member `i` and the members in `others`
    /// (both directions, inside `i`'s namespace and theirs, so neither
    /// side's packets get through even one way).
    pub fn cut(&self, i: usize, others: &[usize]) -> Result<()> {
        for &j in others {
            let (a, b) = (&self.members[i], &self.members[j]);
            for (slot, peer) in [(a, b), (b, a)] {
                let peer = peer.ip.to_string();
                in_ns(&slot.ns, "iptables", &["-w", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
                in_ns(&slot.ns, "iptables", &["-w", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Drops `percent`% of member `i`'s packets, both ways, at random
    /// (iptables' statistic match: loss without netem).
    pub fn loss(&self, i: usize, percent: u32) -> Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        for chain in ["INPUT", "OUTPUT"] {
            let rule = ["-w", "-A", chain, "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"];
            in_ns(&self.members[i].ns, "iptables", &rule)?;
        }
        Ok(())
    }

    /// Adds netem to member `i`'s interface.
    pub fn netem(&self, i: usize, delay_ms: u32, jitter_ms: u32, loss_percent: u32) -> Result<()> {
        let (delay, jitter, loss) = (format!("{delay_ms}ms"), format!("{jitter_ms}ms"), format!("{loss_percent}%"));
        in_ns(
            &self.members[i].ns,
            "tc",
            &["qdisc", "add", "dev", "eth0", "root", "netem", "delay", &delay, &jitter, "loss", &loss],
        )?;
        Ok(())
    }

    /// Slows what member `i` sends to `rate_kbit`, queueing at most
    /// `latency_ms` of it (tc's token bucket filter): packets wait, and
    /// those that would wait longer are dropped. Delay and loss where
    /// netem's module is missing.
    pub fn slow_link(&self, i: usize, rate_kbit: u32, latency_ms: u32) -> Result<()> {
        let (rate, latency) = (format!("{rate_kbit}kbit"), format!("{latency_ms}ms"));
        let tbf = ["qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "16kb", "latency", &latency];
        in_ns(&self.members[i].ns, "tc", &tbf)?;
        Ok(())
    }

    /// Takes member `i`'s link to the bridge down (clients lose it too).
    pub fn link(&self, i: usize, up: bool) -> Result<()> {
        run("ip", &["link", "set", &self.members[i].host_link, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Undoes every network fault: iptables rules flushed, netem removed,
    /// links up. Errors from faults that were not there are expected and
    /// ignored; others are returned.
    pub fn heal(&self) -> Result<()> {
        let mut errors = String::new();
        for slot in &self.members {
            if let Err(err) = in_ns(&slot.ns, "iptables", &["-w", "-F"]) {
                let _ = writeln!(errors, "{err:#}");
            }
            let _ = in_ns(&slot.ns, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            if let Err(err) = run("ip", &["link", "set", &slot.host_link, "up"]) {
                let _ = writeln!(errors, "{err:#}");
            }
        }
        if !errors.is_empty() {
            bail!("healing the network: {errors}");
        }
        Ok(())
    }

    /// Checks that iptables (with its statistic match), tc's netem and tc's
    /// tbf work inside a member's namespace, so a nemesis that needs one is
    /// reported as skipped up front.
    pub fn probe(&self) -> Probed {
        let ns = &self.members[0].ns;
        // `add` then `undo`; why it failed, if it did.
        let works = |tool: &str, add: &[&str], undo: &[&str]| {
            in_ns(ns, tool, add).and_then(|_| in_ns(ns, tool, undo)).err().map(|e| format!("{e:#}"))
        };
        let flush = ["-w", "-F"];
        let iptables = works("iptables", &["-w", "-A", "INPUT", "-s", "192.0.2.254", "-j", "DROP"], &flush);
        let statistic = ["-w", "-A", "INPUT", "-s", "192.0.2.254", "-m", "statistic", "--mode", "random"];
        let statistic = works("iptables", &[&statistic[..], &["--probability", "0.5", "-j", "DROP"]].concat(), &flush);
        let qdisc = |args: &[&str]| {
            works(
                "tc",
                &[&["qdisc", "add", "dev", "lo", "root"], args].concat(),
                &["qdisc", "del", "dev", "lo", "root"],
            )
        };
        let netem = qdisc(&["netem", "delay", "1ms"]);
        let tbf = qdisc(&["tbf", "rate", "1mbit", "burst", "16kb", "latency", "50ms"]);
        Probed { iptables, statistic, netem, tbf }
    }
}

/// Why each network tool cannot be used, if so.
pub struct Probed {
    pub iptables: Option<String>,
    pub statistic: Option<String>,
    pub netem: Option<String>,
    pub tbf: Option<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for slot in &self.members {
            // Members are stopped by their owner first; anything still in
            // the namespace (a member restarted behind its back) goes too.
            kill_all_in(&slot.ns);
            // Deleting the namespace deletes its veth end, which deletes the
            // pair, and its iptables rules and qdiscs with it.
            try_run("ip", &["netns", "del", &slot.ns]);
        }
        if self.forward {
            try_run("iptables", &forward_rule("-D", &self.bridge));
        }
        try_run("ip", &["link", "del", &self.bridge]);
    }
}
