//! etcd's configuration surface, so an existing etcd deployment starts Keel
//! unchanged: every flag of etcd 3.4, 3.5 and 3.6 ([`table::FLAGS`]), the
//! `ETCD_*` environment variables and the YAML `--config-file`, parsed with
//! etcd's syntax, precedence and messages into one typed [`Config`].
//!
//! Each flag is implemented, accepted but not yet acted on (logged and
//! reported), or refused when it would turn on a protection Keel lacks; see
//! [`Support`]. `docs/configuration.md` is generated from the table.

mod config;
mod doc;
mod error;
mod file;
mod flag;
pub mod goflag;
mod load;
pub mod table;

pub use config::{
    bind_addr, AutoCompaction, ClusterState, Config, LogFormat, LogLevel, LogOutput, Logger, TlsSettings,
};
pub use doc::{help_text, markdown, usage_text, version_text, ETCD_API_VERSION, ETCD_SERVER_VERSION};
pub use error::ConfigError;
pub use flag::{find, Flag, Group, Kind, Release, Support, Value};
pub use load::{load, IgnoredFlag, Level, Notice, Outcome, Settings};

#[cfg(test)]
mod tests;
