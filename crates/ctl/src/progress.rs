//! A progress bar for the long commands (`snapshot save`, `snapshot
//! restore`, `check perf`), drawn on stderr only when stderr is a terminal:
//! scripts, which read etcdctl's output, see exactly that and nothing more.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the counted things are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Count,
}

/// A bar being drawn. Redraws at most ten times a second.
pub struct Progress {
    label: String,
    total: Option<u64>,
    unit: Unit,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    out: Box<dyn Write + Send>,
}

const REDRAW: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 30;

impl Progress {
    /// A bar on stderr, or `None` when stderr is not a terminal.
    pub fn start(label: &str, total: Option<u64>, unit: Unit) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Progress::to(Box::new(std::io::stderr()), label, total, unit))
    }

    /// A bar drawn on `out`, terminal or not.
    pub fn to(out: Box<dyn Write + Send>, label: &str, total: Option<u64>, unit: Unit) -> Progress {
        let mut progress =
            Progress { label: label.to_string(), total, unit, done: 0, started: Instant::now(), drawn: None, out };
        progress.draw();
        progress
    }

    /// The total, once known (a snapshot's size arrives with its first piece).
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(mut self) {
        self.draw();
        let _ = writeln!(self.out);
        let _ = self.out.flush();
    }

    fn draw(&mut self) {
        let line = render(&self.label, self.done, self.total, self.started.elapsed(), self.unit);
        // Back to the line's start, the line, then clear what a longer
        // previous line left behind.
        let _ = write!(self.out, "\r{line}\x1b[K");
        let _ = self.out.flush();
        self.drawn = Some(Instant::now());
    }
}

/// One line: label, bar and percentage (when the total is known), amount,
/// rate, and the time left.
pub fn render(label: &str, done: u64, total: Option<u64>, elapsed: Duration, unit: Unit) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let mut line = format!("{label} ");
    match total {
        Some(total) if total > 0 => {
            let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (fraction * BAR_WIDTH as f64).round() as usize;
            line.push('[');
            line.push_str(&"=".repeat(filled));
            if filled < BAR_WIDTH {
                line.push('>');
                line.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
            }
            line.push_str(&format!("] {:>3.0}% ", fraction * 100.0));
            line.push_str(&format!("{} / {}", amount(done, unit), amount(total, unit)));
            line.push_str(&format!("  {}/s", amount(rate as u64, unit)));
            if done >= total {
                line.push_str(&format!("  in {}", duration(elapsed)));
            } else if rate > 0.0 {
                let left = Duration::from_secs_f64((total - done) as f64 / rate);
                line.push_str(&format!("  ETA {}", duration(left)));
            }
        }
        _ => {
            line.push_str(&amount(done, unit));
            line.push_str(&format!("  {}/s", amount(rate as u64, unit)));
        }
    }
    line
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Count => n.to_string(),
        Unit::Bytes => {
            const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
            let mut value = n as f64;
            let mut i = 0;
            while value >= 1024.0 && i + 1 < UNITS.len() {
                value /= 1024.0;
                i += 1;
            }
            if i == 0 {
                format!("{n} B")
            } else {
                format!("{value:.1} {}", UNITS[i])
            }
        }
    }
}

fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_known_total_shows_bar_percentage_rate_and_eta() {
        let line = render("saving", 5 * 1024 * 1024, Some(20 * 1024 * 1024), Duration::from_secs(2), Unit::Bytes);
        assert_eq!(line, "saving [========>                     ]  25% 5.0 MiB / 20.0 MiB  2.5 MiB/s  ETA 6.0s");
    }

    #[test]
    fn a_finished_bar_says_how_long_it_took() {
        let line = render("writes", 9000, Some(9000), Duration::from_secs(61), Unit::Count);
        assert_eq!(line, "writes [==============================] 100% 9000 / 9000  147/s  in 1m01s");
    }

    #[test]
    fn an_unknown_total_shows_amount_and_rate() {
        assert_eq!(render("saving", 512, None, Duration::from_secs(1), Unit::Bytes), "saving 512 B  512 B/s");
        assert_eq!(render("saving", 0, None, Duration::ZERO, Unit::Count), "saving 0  0/s");
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn redraws_are_rate_limited_and_the_last_state_is_drawn() {
        let out = Shared::default();
        let mut bar = Progress::to(Box::new(out.clone()), "n", Some(1000), Unit::Count);
        for done in 1..=1000 {
            bar.set(done);
        }
        bar.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let draws = text.matches('\r').count();
        assert!(draws <= 4, "{draws} redraws in a tight loop: {text:?}");
        assert!(text.ends_with("\x1b[K\n"), "{text:?}");
        assert!(text.contains("100% 1000 / 1000"), "{text:?}");
    }
}
