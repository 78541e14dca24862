//! Time as a member sees it, behind a trait so a simulation can run a whole
//! cluster on virtual time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time for deadlines and contact tracking, and wall time for
/// ids that must not repeat across restarts.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Milliseconds since the Unix epoch.
    fn unix_millis(&self) -> u64;
}

/// The machine's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// tokio's clock: the machine's, or virtual time when the runtime's clock is
/// paused (`tokio::time::pause`), so async waits and the member's deadlines
/// move together in a simulation. Wall time starts at `epoch_millis` and
/// moves with it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    epoch_millis: u64,
}

impl TokioClock {
    /// Must be made on the runtime whose clock it reads.
    pub fn new(epoch_millis: u64) -> TokioClock {
        TokioClock { start: tokio::time::Instant::now(), epoch_millis }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn unix_millis(&self) -> u64 {
        self.epoch_millis + self.start.elapsed().as_millis() as u64
    }
}
