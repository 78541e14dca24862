//! Logging as etcd configures it: `--logger` (zap's structured lines, see
//! [`zap`], or capnslog's human-readable text), `--log-format`,
//! `--log-level` (`KEEL_LOG`, a tracing filter, overrides it) and
//! `--log-outputs`; then the notices that loading the configuration produced
//! before logging existed.

mod zap;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use keel_config::{Config, Level, LogFormat, LogOutput, Logger, Notice};
use tracing_subscriber::fmt::MakeWriter;

/// Why logging could not start, in etcd's words (zap's `Open`): reported as
/// etcd reports it, an "error verifying flags".
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn init(config: &Config, notices: &[Notice]) -> Result<(), InitError> {
    let sinks = Sinks(Arc::new(open_outputs(&config.log_outputs)?));
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_level.as_str()));
    let installed = match config.logger {
        Logger::Zap => {
            let encoding = match config.log_format {
                LogFormat::Json => zap::Encoding::Json,
                LogFormat::Console => zap::Encoding::Console,
            };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(sinks)
                .with_ansi(false)
                .fmt_fields(zap::ZapFields { encoding })
                .event_format(zap::ZapFormat { encoding })
                .try_init()
        }
        Logger::Capnslog => {
            let ansi =
                matches!(sinks.0.as_slice(), [Sink::Stderr]) && std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(sinks).with_ansi(ansi).try_init()
        }
    };
    installed.map_err(|err| InitError(format!("cannot set up logging: {err}")))?;
    for notice in notices {
        match notice.level {
            Level::Info => tracing::info!("{}", notice.message),
            Level::Warn => tracing::warn!("{}", notice.message),
        }
    }
    Ok(())
}

/// Opens every output as zap's `Open` does: files for appending, created
/// if missing; every failure reported, in the sorted order etcd opens them
/// (`MergeOutputPaths`), joined as Go's multierr joins them. "/dev/null"
/// among the outputs discards everything, as in etcd.
fn open_outputs(outputs: &[LogOutput]) -> Result<Vec<Sink>, InitError> {
    let discard =
        outputs.iter().any(|output| matches!(output, LogOutput::File(path) if path == Path::new("/dev/null")));
    let mut files: Vec<&Path> = outputs
        .iter()
        .filter_map(|output| match output {
            LogOutput::File(path) => Some(path.as_path()),
            _ => None,
        })
        .filter(|path| !discard || *path == Path::new("/dev/null"))
        .collect();
    files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    let mut sinks = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => sinks.push(Sink::File(Arc::new(parking_lot::Mutex::new(file)))),
            Err(err) => errors.push(open_error(path, &err)),
        }
    }
    if !errors.is_empty() {
        return Err(InitError(errors.join("; ")));
    }
    if !discard {
        for output in outputs {
            match output {
                LogOutput::Stderr => sinks.push(Sink::Stderr),
                LogOutput::Stdout => sinks.push(Sink::Stdout),
                LogOutput::File(_) => {}
            }
        }
    }
    Ok(sinks)
}

/// zap's message for a file it cannot open, with Go's `*PathError` text:
/// `open sink "x.log": open x.log: permission denied`.
fn open_error(path: &Path, err: &std::io::Error) -> String {
    let path = path.display().to_string();
    format!("open sink {path:?}: open {path}: {}", go_error_text(err))
}

/// Go's text for an OS error: the C library's, starting lowercase
/// ("no such file or directory", "permission denied", "is a directory").
fn go_error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match err.raw_os_error() {
        Some(code) => text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text).to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

enum Sink {
    Stderr,
    Stdout,
    File(Arc<parking_lot::Mutex<std::fs::File>>),
}

/// Every configured output gets every line.
#[derive(Clone)]
struct Sinks(Arc<Vec<Sink>>);

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = Sinks;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for Sinks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for sink in self.0.iter() {
            match sink {
                Sink::Stderr => std::io::stderr().write_all(buf)?,
                Sink::Stdout => std::io::stdout().write_all(buf)?,
                Sink::File(file) => file.lock().write_all(buf)?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for sink in self.0.iter() {
            match sink {
                Sink::Stderr => std::io::stderr().flush()?,
                Sink::Stdout => std::io::stdout().flush()?,
                Sink::File(file) => file.lock().flush()?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn unopenable_outputs_get_zaps_message_for_each_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let missing_b = dir.path().join("no/b.log");
        let missing_a = dir.path().join("no/a.log");
        let outputs = [
            LogOutput::Stderr,
            LogOutput::File(missing_b.clone()),
            LogOutput::File(dir.path().to_path_buf()),
            LogOutput::File(missing_a.clone()),
        ];
        let Err(err) = open_outputs(&outputs) else { panic!("opened") };
        let (a, b, d) = (missing_a.display(), missing_b.display(), dir.path().display());
        let mut expected = [
            format!("open sink \"{a}\": open {a}: no such file or directory"),
            format!("open sink \"{b}\": open {b}: no such file or directory"),
            format!("open sink \"{d}\": open {d}: is a directory"),
        ];
        expected.sort();
        assert_eq!(err.to_string(), expected.join("; "));
    }

    #[test]
    fn files_are_created_and_dev_null_discards_everything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.log");
        let sinks = open_outputs(&[LogOutput::Stdout, LogOutput::File(file.clone())]).unwrap();
        assert_eq!(sinks.len(), 2);
        assert!(file.exists());
        let untouched = dir.path().join("untouched.log");
        let sinks = open_outputs(&[
            LogOutput::Stderr,
            LogOutput::File(untouched.clone()),
            LogOutput::File(PathBuf::from("/dev/null")),
        ])
        .unwrap();
        assert!(matches!(sinks.as_slice(), [Sink::File(_)]));
        assert!(!untouched.exists());
    }

    #[test]
    fn os_errors_read_as_gos() {
        let text = |code| go_error_text(&std::io::Error::from_raw_os_error(code));
        // Linux's EPERM, ENOENT, EACCES, EISDIR.
        assert_eq!(text(1), "operation not permitted");
        assert_eq!(text(2), "no such file or directory");
        assert_eq!(text(13), "permission denied");
        assert_eq!(text(21), "is a directory");
    }
}
