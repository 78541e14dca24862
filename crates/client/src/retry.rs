//! What long-lived streams (watch, keep-alive) do between reconnects.

use std::time::Duration;

use tonic::Code;

use crate::ClientError;

const FIRST_DELAY: Duration = Duration::from_millis(25);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Errors after which re-opening a stream may succeed: no endpoint reachable,
/// a broken connection, a member unavailable (down, or without a leader),
/// or one too slow to answer within the request timeout (paused, cut off
/// from its peers, or a new member still catching up).
pub(crate) fn is_transient(error: &ClientError) -> bool {
    matches!(error, ClientError::Transport { .. } | ClientError::Connection { .. } | ClientError::Timeout(_))
        || error.code() == Some(Code::Unavailable)
}

/// Doubling delays, capped so a stream resumes within a second of the
/// cluster coming back.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: FIRST_DELAY }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [25, 50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn only_unavailability_and_timeouts_are_transient() {
        assert!(is_transient(&ClientError::Status { code: Code::Unavailable, message: "no leader".into() }));
        assert!(is_transient(&ClientError::Timeout(Duration::from_secs(2))));
        assert!(!is_transient(&ClientError::Status { code: Code::InvalidArgument, message: String::new() }));
        assert!(!is_transient(&ClientError::LeaseNotFound));
    }
}
