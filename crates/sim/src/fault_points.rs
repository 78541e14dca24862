//! Crashes at exact points inside a member's step: the fault points of
//! `keel_raft_node::failpoints` (before and after the raft log's sync,
//! before and after applying an entry, revoking a lease, building a
//! snapshot, before, midway through and after installing one). With this
//! crate's `failpoints` feature each point, reached while the simulation
//! steps a member, may crash that member as the seed decides: the point
//! panics with [`SimulatedCrash`], [`stepping`] catches it, and the world
//! powers the member off at that instant (unsynced writes lost). Without the
//! feature the points are compiled out and nothing here crashes.

/// Every fault point of the member.
pub const POINTS: [&str; 9] = [
    "raft-log-before-sync",
    "raft-log-after-sync",
    "apply-before",
    "apply-after",
    "lease-revoke",
    "snapshot-build",
    "snapshot-install-before",
    "snapshot-install-midway",
    "snapshot-install-after",
];

/// The panic a fault point raises to crash the member being stepped.
#[derive(Debug)]
pub struct SimulatedCrash {
    pub point: &'static str,
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::cell::RefCell;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::{SimulatedCrash, POINTS};

    /// Whether points crash on this thread, and the dice.
    struct Plan {
        rng: StdRng,
        /// One evaluation in this many crashes, at the points every write
        /// passes; the rare ones (a lease revoked, a snapshot built or
        /// installed: a few times a run) crash far more often, or never would.
        one_in: u32,
        stepping: bool,
    }

    /// How much likelier a crash is at a rare point.
    const RARE_BOOST: u32 = 500;

    fn is_rare(point: &str) -> bool {
        point.starts_with("snapshot-") || point == "lease-revoke"
    }

    thread_local! {
        // The registry of the `fail` crate is global, so each simulation
        // (one per thread) keeps its own plan here.
        static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
    }

    fn register_once() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            for point in POINTS {
                fail::cfg_callback(point, move || reached(point)).expect("a fault point takes a callback");
            }
            // A simulated crash is no failure: keep it off stderr.
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !info.payload().is::<SimulatedCrash>() {
                    default_hook(info);
                }
            }));
        });
    }

    fn reached(point: &'static str) {
        let crash = PLAN.with(|plan| match plan.borrow_mut().as_mut() {
            Some(plan) if plan.stepping => {
                let one_in = if is_rare(point) { (plan.one_in / RARE_BOOST).max(2) } else { plan.one_in };
                plan.rng.gen_ratio(1, one_in)
            }
            _ => false,
        });
        if crash {
            std::panic::panic_any(SimulatedCrash { point });
        }
    }

    pub(crate) fn arm(seed: u64, one_in: u32) {
        register_once();
        let rng = StdRng::seed_from_u64(seed ^ 0xfa17_9017);
        PLAN.with(|plan| *plan.borrow_mut() = Some(Plan { rng, one_in: one_in.max(1), stepping: false }));
    }

    pub(crate) fn disarm() {
        PLAN.with(|plan| *plan.borrow_mut() = None);
    }

    pub(crate) fn set_stepping(on: bool) {
        PLAN.with(|plan| {
            if let Some(plan) = plan.borrow_mut().as_mut() {
                plan.stepping = on;
            }
        });
    }
}

/// Lets fault points crash members stepped on this thread from now on, one
/// evaluation in `one_in`, with dice from `seed`.
pub(crate) fn arm(seed: u64, one_in: u32) {
    #[cfg(feature = "failpoints")]
    armed::arm(seed, one_in);
    #[cfg(not(feature = "failpoints"))]
    let _ = (seed, one_in);
}

/// No more crashes at fault points on this thread.
pub(crate) fn disarm() {
    #[cfg(feature = "failpoints")]
    armed::disarm();
}

/// Runs one step of a member; `Err(point)` when a fault point crashed it.
pub(crate) fn stepping<T>(step: impl FnOnce() -> T) -> Result<T, &'static str> {
    #[cfg(feature = "failpoints")]
    {
        armed::set_stepping(true);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(step));
        armed::set_stepping(false);
        match outcome {
            Ok(value) => Ok(value),
            Err(payload) => match payload.downcast::<SimulatedCrash>() {
                Ok(crash) => Err(crash.point),
                Err(payload) => std::panic::resume_unwind(payload),
            },
        }
    }
    #[cfg(not(feature = "failpoints"))]
    Ok(step())
}
