//! Logging as configured by etcd's --log-level and --log-outputs (`KEEL_LOG`,
//! a tracing filter, overrides the level), then the notices that loading
//! the configuration produced before logging existed.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use keel_config::{Config, Level, LogOutput, Notice};
use tracing_subscriber::fmt::MakeWriter;

pub fn init(config: &Config, notices: &[Notice]) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_level.as_str()));
    let mut sinks = Vec::new();
    for output in &config.log_outputs {
        sinks.push(match output {
            LogOutput::Stderr => Sink::Stderr,
            LogOutput::Stdout => Sink::Stdout,
            LogOutput::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open log output {}", path.display()))?;
                Sink::File(Arc::new(parking_lot::Mutex::new(file)))
            }
        });
    }
    let ansi = matches!(sinks.as_slice(), [Sink::Stderr]) && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(Sinks(Arc::new(sinks))).with_ansi(ansi).init();
    for notice in notices {
        match notice.level {
            Level::Info => tracing::info!("{}", notice.message),
            Level::Warn => tracing::warn!("{}", notice.message),
        }
    }
    Ok(())
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
