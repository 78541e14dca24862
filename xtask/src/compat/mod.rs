//! `cargo xtask compat`: the differential compatibility suite.
//!
//! Starts a fresh real etcd (the reference) and a fresh Keel (the candidate), both with
//! `--enable-v2`, runs the same etcdctl script ([`cases::CASES`], then the `ETCDCTL_API=2`
//! script [`cases::V2_CASES`]) against both, normalises what legitimately differs
//! ([`normalise`]) and diffs the rest. A difference fails the run unless `docs/compat.md`
//! lists the case under "Known differences" ([`known`]). `--only etcd` runs the reference
//! against a second fresh etcd instead, which must produce no difference at all: that checks
//! the harness and the normaliser themselves. Each server has its own [`session::Session`]: the
//! lease ids it granted, which later cases refer to and the normaliser rewrites. After the
//! script, the TLS matrix ([`tls`]) starts a server pair per group with etcd's TLS flags and
//! runs its cases the same way.

mod cases;
mod diff;
mod known;
mod normalise;
mod runner;
mod server;
mod session;
mod tls;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cargo;
use cases::{Case, CASES, V2_CASES};
use known::KnownDifferences;
use runner::{Api, Background, Etcdctl, Outcome, StopOrder};
use server::Server;
use session::Session;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Keel binary to test [default: `cargo build -p keel-server --bin keel`, debug profile]
    #[arg(long, value_name = "PATH")]
    keel_bin: Option<PathBuf>,
    /// Extra argument for keel (repeatable)
    #[arg(long = "keel-arg", value_name = "ARG", allow_hyphen_values = true)]
    keel_args: Vec<String>,
    /// The reference etcd
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    etcd_bin: PathBuf,
    /// etcdctl (v3.4) used for every case
    #[arg(long, value_name = "PATH", default_value = "etcdctl")]
    etcdctl_bin: PathBuf,
    /// Compare etcd with a second fresh etcd instead of Keel (checks the harness)
    #[arg(long, value_enum, value_name = "SERVER")]
    only: Option<Only>,
    /// Print every case with its normalised reference output
    #[arg(long, short)]
    verbose: bool,
    /// Run only the TLS matrix (its own server pairs), not the plaintext script
    #[arg(long)]
    tls_only: bool,
    /// keelctl, run over the v3 script on a Keel of its own and diffed against etcdctl's
    /// output on Keel [default: built with the workspace]
    #[arg(long, value_name = "PATH")]
    keelctl_bin: Option<PathBuf>,
    /// Skip the keelctl half of the script
    #[arg(long)]
    no_keelctl: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Etcd,
}

enum Verdict {
    Same,
    Known(String),
    Differs(String),
}

/// How keelctl did on a case, next to etcdctl on Keel.
enum KeelctlVerdict {
    Same,
    Differs(String),
}

pub fn run(opts: &Options) -> Result<()> {
    let docs = cargo::workspace_root().join("docs/compat.md");
    let markdown = std::fs::read_to_string(&docs).with_context(|| format!("reading {}", docs.display()))?;
    let known = known::parse(&markdown)?;
    if let Some(unknown) = known.ids().find(|id| !all_cases().any(|c| c.id == *id)) {
        bail!("docs/compat.md lists `{unknown}`, which is not a case id");
    }

    let etcdctl = Etcdctl::new(opts.etcdctl_bin.clone());
    let candidate_bin = match opts.only {
        Some(Only::Etcd) => None,
        None => Some(match &opts.keel_bin {
            Some(path) => path.clone(),
            None => cargo::build_bin("keel")?,
        }),
    };
    // In `--only etcd` mode every difference is a harness bug: the list does not apply.
    let allowed = match opts.only {
        Some(Only::Etcd) => KnownDifferences::default(),
        None => known,
    };
    let mut tally = Tally::default();
    // The doubled script (issue 17): keelctl on a Keel of its own, in step with the candidate.
    let keelctl_bin = match (&candidate_bin, opts.no_keelctl, &opts.keelctl_bin) {
        (None, _, _) | (_, true, _) => None,
        (Some(_), false, Some(path)) => Some(path.clone()),
        (Some(_), false, None) => Some(cargo::build_bin("keelctl")?),
    };

    if !opts.tls_only {
        let (mut reference, mut candidate) = start_pair(opts, candidate_bin.as_deref(), &[], &etcdctl)?;
        let mut keelctl_side = match (&keelctl_bin, &candidate_bin) {
            (Some(keelctl), Some(keel)) => {
                let server = Server::start("keel-2", keel, &opts.keel_args, &etcdctl)?;
                let session = Session::for_server(server.peer_addr(), server.scratch_dir());
                Some((Etcdctl::new(keelctl.clone()), server, session))
            }
            _ => None,
        };
        eprintln!(
            "running {} cases: {} at {} vs {} at {}",
            CASES.len(),
            reference.label(),
            reference.client_addr(),
            candidate.label(),
            candidate.client_addr()
        );
        let (mut reference_session, mut candidate_session) = (
            Session::for_server(reference.peer_addr(), reference.scratch_dir()),
            Session::for_server(candidate.peer_addr(), candidate.scratch_dir()),
        );
        for case in CASES {
            let (verdict, on_keel) = run_case(
                case,
                &etcdctl,
                [(&mut reference, &mut reference_session), (&mut candidate, &mut candidate_session)],
                &allowed,
                opts,
            )?;
            tally.record(case, &etcdctl, verdict, &allowed, opts);
            if let Some((keelctl, server, session)) = &mut keelctl_side {
                let verdict = run_keelctl_case(case, keelctl, &on_keel, (server, session), opts)?;
                tally.record_keelctl(case, verdict);
            }
        }

        // The v2 script, on the same pair: v2 writes leave v3 revisions alone, and the v3
        // script's membership changes are what the v2 index starts from.
        let etcdctl_v2 = etcdctl.with_api(Api::V2);
        eprintln!("running {} ETCDCTL_API=2 cases", V2_CASES.len());
        for case in V2_CASES {
            let (verdict, on_keel) = run_case(
                case,
                &etcdctl_v2,
                [(&mut reference, &mut reference_session), (&mut candidate, &mut candidate_session)],
                &allowed,
                opts,
            )?;
            tally.record(case, &etcdctl_v2, verdict, &allowed, opts);
            if let Some((keelctl, server, session)) = &mut keelctl_side {
                let keelctl_v2 = keelctl.with_api(Api::V2);
                let verdict = run_keelctl_case(case, &keelctl_v2, &on_keel, (server, session), opts)?;
                tally.record_keelctl(case, verdict);
            }
        }
        if keelctl_side.is_some() {
            tally.report_keelctl();
        }
    }

    // The TLS matrix: a server pair per group, started with the group's flags.
    let pki = tls::Pki::generate()?;
    for group in tls::GROUPS {
        let ready = etcdctl.with_transport("https", tls::expand(group.ready, pki.dir()));
        let flags = tls::expand(group.server_flags, pki.dir());
        let (mut reference, mut candidate) = start_pair(opts, candidate_bin.as_deref(), &flags, &ready)
            .with_context(|| format!("starting the TLS group {:?}", group.name))?;
        eprintln!("running {} TLS cases: {}", group.cases.len(), group.name);
        let (mut reference_session, mut candidate_session) = (
            Session::for_server(reference.peer_addr(), reference.scratch_dir()),
            Session::for_server(candidate.peer_addr(), candidate.scratch_dir()),
        );
        for tls_case in group.cases {
            let client = etcdctl.with_transport(tls_case.scheme, tls_case.etcdctl_flags(pki.dir()));
            let (verdict, _) = run_case(
                &tls_case.case,
                &client,
                [(&mut reference, &mut reference_session), (&mut candidate, &mut candidate_session)],
                &allowed,
                opts,
            )?;
            tally.record(&tls_case.case, &client, verdict, &allowed, opts);
        }
    }

    tally.finish()
}

/// The reference etcd and the candidate (Keel, or a second etcd under `--only etcd`), each
/// started with `flags` and checked healthy by `etcdctl`, whose scheme is their client URL's.
fn start_pair(
    opts: &Options,
    candidate_bin: Option<&std::path::Path>,
    flags: &[String],
    etcdctl: &Etcdctl,
) -> Result<(Server, Server)> {
    let reference = Server::start("etcd", &opts.etcd_bin, flags, etcdctl)?;
    let candidate = match candidate_bin {
        None => Server::start("etcd-2", &opts.etcd_bin, flags, etcdctl)?,
        Some(bin) => {
            let args: Vec<String> = flags.iter().chain(&opts.keel_args).cloned().collect();
            Server::start("keel", bin, &args, etcdctl)?
        }
    };
    Ok((reference, candidate))
}

/// Every case id `docs/compat.md` may name: the scripts' (v3 and v2) and the TLS matrix's.
fn all_cases() -> impl Iterator<Item = &'static Case> {
    CASES.iter().chain(V2_CASES).chain(tls::cases())
}

#[derive(Default)]
struct Tally {
    cases: usize,
    failures: Vec<&'static str>,
    keelctl_same: usize,
    known_hits: Vec<&'static str>,
    stale: Vec<(&'static str, String)>,
}

impl Tally {
    fn record(
        &mut self,
        case: &'static Case,
        etcdctl: &Etcdctl,
        verdict: Verdict,
        allowed: &KnownDifferences,
        opts: &Options,
    ) {
        self.cases += 1;
        match verdict {
            Verdict::Same => {
                if let Some(why) = allowed.justification(case.id) {
                    self.stale.push((case.id, why.to_owned()));
                }
            }
            Verdict::Known(diff) => {
                println!("known  {}", case.id);
                if opts.verbose {
                    print!("{diff}");
                }
                self.known_hits.push(case.id);
            }
            Verdict::Differs(diff) => {
                println!("FAIL   {}: {}", case.id, describe(case, etcdctl));
                print!("{diff}");
                self.failures.push(case.id);
            }
        }
    }

    fn record_keelctl(&mut self, case: &'static Case, verdict: KeelctlVerdict) {
        match verdict {
            KeelctlVerdict::Same => self.keelctl_same += 1,
            KeelctlVerdict::Differs(diff) => {
                println!("FAIL   {}: keelctl prints otherwise than etcdctl on Keel", case.id);
                print!("{diff}");
                self.failures.push(case.id);
            }
        }
    }

    fn report_keelctl(&self) {
        println!("keelctl: {} cases identical to etcdctl's", self.keelctl_same);
    }

    fn finish(self) -> Result<()> {
        for (id, why) in &self.stale {
            println!("note: `{id}` is listed in docs/compat.md ({why}) but now matches etcd; remove it");
        }
        println!(
            "{} cases: {} identical, {} known differences, {} unexpected differences",
            self.cases,
            self.cases - self.known_hits.len() - self.failures.len(),
            self.known_hits.len(),
            self.failures.len()
        );
        if !self.failures.is_empty() {
            bail!(
                "{} case(s) differ from etcd and are not listed in docs/compat.md: {}",
                self.failures.len(),
                self.failures.join(", ")
            );
        }
        Ok(())
    }
}

fn run_case(
    case: &Case,
    etcdctl: &Etcdctl,
    servers: [(&mut Server, &mut Session); 2],
    allowed: &KnownDifferences,
    opts: &Options,
) -> Result<(Verdict, normalise::Normalised)> {
    let [(reference, reference_session), (candidate, candidate_session)] = servers;
    let expected = run_on(case, etcdctl, reference, reference_session, true)?;
    let actual = run_on(case, etcdctl, candidate, candidate_session, false)?;
    if opts.verbose {
        println!("case   {}: {}", case.id, describe(case, etcdctl));
        print_indented(&format!("[{}]", expected.exit));
        print_indented(&expected.stdout);
        print_indented(&expected.stderr);
    }
    let verdict = match diff::render(reference.label(), &expected, candidate.label(), &actual) {
        None => Verdict::Same,
        Some(diff) if allowed.justification(case.id).is_some() => Verdict::Known(diff),
        Some(diff) => Verdict::Differs(diff),
    };
    Ok((verdict, actual))
}

/// Runs `case` with `client` on one server and normalises what it printed.
fn run_on(
    case: &Case,
    client: &Etcdctl,
    server: &mut Server,
    session: &mut Session,
    reference: bool,
) -> Result<normalise::Normalised> {
    let args: Vec<String> = case.args.iter().map(|a| session.substitute(a)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdin = case.stdin.map(|s| session.substitute(s));
    let outcome = match &case.watching {
        None => client.run(server.client_addr(), &args, stdin.as_deref()),
        Some(watching) => client.run_watching(
            server.client_addr(),
            &Background {
                args: watching.args,
                stdin: watching.stdin,
                interrupt: watching.interrupt,
                held: watching.held,
            },
            &args,
            stdin.as_deref(),
        ),
    }
    .with_context(|| format!("case {}", case.id))?;
    // A crashed server would turn every later case into noise; stop at the first.
    server.ensure_running().with_context(|| format!("after case {}", case.id))?;
    let captured = case.capture.map(|var| session.capture(var, &outcome.stdout).is_some());
    if reference {
        check_reference_grant(case, captured, &outcome)?;
    }
    let mut normalised =
        normalise::normalise(case.kind, &outcome, (server.client_addr(), server.peer_addr()), session.leases());
    for text in [&mut normalised.stdout, &mut normalised.stderr] {
        *text = text.replace(server.scratch_dir(), "<dir>");
    }
    Ok(normalised)
}

/// The doubled script's second half: `case` run with keelctl on a Keel of its own, and what
/// it printed diffed against `by_etcdctl`, what etcdctl printed for it on Keel.
fn run_keelctl_case(
    case: &Case,
    keelctl: &Etcdctl,
    by_etcdctl: &normalise::Normalised,
    (server, session): (&mut Server, &mut Session),
    opts: &Options,
) -> Result<KeelctlVerdict> {
    let by_keelctl = run_on(case, keelctl, server, session, false)?;
    Ok(match diff::render("etcdctl", by_etcdctl, "keelctl", &by_keelctl) {
        None => KeelctlVerdict::Same,
        Some(diff) => {
            if opts.verbose {
                println!("keelctl {}: {}", case.id, describe(case, keelctl));
            }
            KeelctlVerdict::Differs(diff)
        }
    })
}

/// A `lease grant` the reference fails although the script captures its id, or one it answers
/// although the script does not (an id later cases cannot name, revoke or normalise), is a
/// bug in the script. The candidate doing either shows up as a difference instead.
fn check_reference_grant(case: &Case, captured: Option<bool>, outcome: &Outcome) -> Result<()> {
    let granted = case.args.starts_with(&["lease", "grant"]) && outcome.success();
    match captured {
        Some(false) => {
            bail!("case {}: the reference printed no id to capture:\n{}{}", case.id, outcome.stdout, outcome.stderr)
        }
        None if granted => bail!("case {}: grants a lease but captures no id", case.id),
        _ => Ok(()),
    }
}

/// The command line as a reader would type it (TLS flags and a scheme other than `http` shown).
fn describe(case: &Case, etcdctl: &Etcdctl) -> String {
    let mut text = String::new();
    if etcdctl.scheme() != "http" || !etcdctl.transport().is_empty() {
        text.push_str(&format!("[{}://, {}] ", etcdctl.scheme(), etcdctl.transport().join(" ")));
    }
    if etcdctl.api() == Api::V2 {
        text.push_str("ETCDCTL_API=2 ");
    }
    if let Some(watching) = &case.watching {
        text.push_str(&format!("etcdctl {}", watching.args.join(" ")));
        if let Some(script) = watching.stdin {
            text.push_str(&format!(" <<< {script:?}"));
        }
        text.push_str(" & ");
    }
    text.push_str("etcdctl");
    for arg in case.args {
        if arg.is_empty() || arg.contains([' ', '\n', '"']) {
            text.push_str(&format!(" {arg:?}"));
        } else {
            text.push(' ');
            text.push_str(arg);
        }
    }
    if let Some(stdin) = case.stdin {
        text.push_str(&format!(" <<< {stdin:?}"));
    }
    match case.watching.and_then(|w| w.held) {
        Some(StopOrder::ForegroundFirst) => text.push_str(" & (both interrupted, this one first)"),
        Some(StopOrder::BackgroundFirst) => text.push_str(" & (both interrupted, the first one first)"),
        None => {}
    }
    text
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("         {line}");
    }
}
