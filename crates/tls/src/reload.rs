//! A configuration rebuilt when the files it was built from change.
//!
//! The files are looked at (size and modification time: one `stat` each) at
//! most once per [`CHECK_INTERVAL`], when a connection asks for the
//! configuration; only a change reads them again. These are small blocking
//! calls on the async runtime, kept that rare on purpose.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::TlsError;

const CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Stamp = Option<(SystemTime, u64)>;
type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

pub(crate) struct Reloading<T> {
    files: Vec<PathBuf>,
    build: Build<T>,
    interval: Duration,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

impl<T> Reloading<T> {
    /// Builds the first configuration; its errors are the caller's.
    pub(crate) fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        // Stamped before reading: a change while building is seen next time.
        let stamps = stamps(&files);
        let current = Arc::new(build()?);
        Ok(Reloading {
            files,
            build: Box::new(build),
            interval: CHECK_INTERVAL,
            state: Mutex::new(State { current, stamps, checked: Instant::now() }),
        })
    }

    #[cfg(test)]
    pub(crate) fn check_every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The configuration in force, rebuilt first if its files changed.
    pub(crate) fn current(&self) -> Arc<T> {
        let mut state = self.state.lock();
        if self.files.is_empty() || state.checked.elapsed() < self.interval {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let now = stamps(&self.files);
        if now == state.stamps {
            return state.current.clone();
        }
        // The new stamps are kept even when the build fails: a rotation
        // caught half-written is retried when the next file lands, not
        // every second.
        state.stamps = now;
        match (self.build)() {
            Ok(config) => {
                tracing::info!(files = ?self.files, "TLS files changed; reloaded");
                state.current = Arc::new(config);
            }
            Err(err) => tracing::warn!(%err, "TLS files changed but cannot be loaded; keeping the previous ones"),
        }
        state.current.clone()
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}
