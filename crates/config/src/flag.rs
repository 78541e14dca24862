//! What one flag is: its name, value syntax, default, and what Keel does
//! with it.

use std::time::Duration;

use crate::goflag::{self, FlagUrl};

/// The syntax of a flag's value, and so its parse errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// Go's bool flag: `--flag` alone means true; a value only after `=`.
    Bool,
    /// Go's uint/uint64 flag (base prefixes allowed).
    Uint,
    /// etcd's own uint32 flag type, which reports strconv's raw errors.
    Uint32,
    /// Go's int/int64 flag.
    Int,
    /// A Go duration ("100ms", "1h30m").
    Duration,
    /// A comma-separated list of URLs, checked and sorted as etcd does.
    Urls,
    /// A comma-separated list of strings.
    Strings,
    /// One of a fixed set of strings (etcd's SelectiveStringValue).
    Choice(&'static [&'static str]),
    /// A comma-separated list from a fixed set (SelectiveStringsValue).
    Choices(&'static [&'static str]),
    /// `Name=bool,...`, etcd 3.6's --feature-gates.
    FeatureGates,
    /// etcd 2 names that etcd still accepts as booleans and ignores.
    Legacy,
}

impl Kind {
    pub fn is_bool(self) -> bool {
        matches!(self, Kind::Bool | Kind::Legacy)
    }

    /// How the docs name the syntax.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Bool | Kind::Legacy => "bool",
            Kind::Uint | Kind::Uint32 => "unsigned integer",
            Kind::Int => "integer",
            Kind::Duration => "duration",
            Kind::Urls => "URL list",
            Kind::Strings => "string list",
            Kind::Choice(_) => "one of",
            Kind::Choices(_) => "list of",
            Kind::FeatureGates => "Name=bool list",
        }
    }

    /// Parses a value as etcd's flag of this kind does; the error is the
    /// text etcd puts after `invalid value "…" for flag -name: `.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        Ok(match self {
            Kind::Str => Value::Str(text.to_string()),
            Kind::Bool => Value::Bool(goflag::parse_bool(text)?),
            // etcd's IgnoredFlag takes any value.
            Kind::Legacy => Value::Str(text.to_string()),
            Kind::Uint => Value::Uint(goflag::parse_uint(text)?),
            Kind::Uint32 => Value::Uint(u64::from(goflag::parse_uint32(text)?)),
            Kind::Int => Value::Int(goflag::parse_int(text)?),
            Kind::Duration => Value::Duration(goflag::parse_duration(text)?.unwrap_or(Duration::ZERO)),
            Kind::Urls => Value::Urls(goflag::parse_urls(text)?),
            Kind::Strings => Value::List(split_list(text)),
            Kind::Choice(choices) => {
                if !choices.contains(&text) {
                    return Err("invalid value".to_string());
                }
                Value::Str(text.to_string())
            }
            Kind::Choices(choices) => {
                let values = split_list(text);
                if let Some(bad) = values.iter().find(|value| !choices.contains(&value.as_str())) {
                    return Err(format!("invalid value {bad:?}"));
                }
                Value::List(values)
            }
            Kind::FeatureGates => Value::Gates(parse_gates(text)?),
        })
    }
}

/// etcd's string-list flags split on commas and drop empty entries.
fn split_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect()
}

/// etcd 3.6's feature gates, with its messages.
pub const FEATURE_GATES: &[&str] = &[
    "AllAlpha",
    "AllBeta",
    "CompactHashCheck",
    "InitialCorruptCheck",
    "LeaseCheckpoint",
    "LeaseCheckpointPersist",
    "SetMemberLocalAddr",
    "StopGRPCServiceOnDefrag",
    "TxnModeWriteWithSharedBuffer",
];

fn parse_gates(text: &str) -> Result<Vec<(String, bool)>, String> {
    let mut gates = Vec::new();
    for entry in split_list(text) {
        let (name, value) = match entry.split_once('=') {
            Some((name, value)) => (name.trim(), value.trim()),
            None => return Err(format!("missing bool value for {entry}")),
        };
        let enabled = goflag::parse_bool(value).map_err(|_| {
            format!("invalid value of {name}={value}, err: strconv.ParseBool: parsing {value:?}: invalid syntax")
        })?;
        if !FEATURE_GATES.contains(&name) {
            return Err(format!("unrecognized feature gate: {name}"));
        }
        gates.push((name.to_string(), enabled));
    }
    Ok(gates)
}

/// A parsed flag value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Uint(u64),
    Int(i64),
    Duration(Duration),
    Urls(Vec<FlagUrl>),
    List(Vec<String>),
    Gates(Vec<(String, bool)>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(text) => f.write_str(text),
            Value::Bool(value) => write!(f, "{value}"),
            Value::Uint(value) => write!(f, "{value}"),
            Value::Int(value) => write!(f, "{value}"),
            Value::Duration(value) => f.write_str(&goflag::format_duration(*value)),
            Value::Urls(urls) => f.write_str(&urls.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
            Value::List(items) => f.write_str(&items.join(",")),
            Value::Gates(gates) => {
                f.write_str(&gates.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// The etcd release a flag first appeared in (or Keel, for Keel's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    V3_4,
    V3_5,
    V3_6,
    Keel,
}

impl Release {
    pub fn label(self) -> &'static str {
        match self {
            Release::V3_4 => "3.4",
            Release::V3_5 => "3.5",
            Release::V3_6 => "3.6",
            Release::Keel => "Keel",
        }
    }
}

/// The sections of `--help`, in etcd's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Usage,
    Member,
    Clustering,
    Security,
    Auth,
    Profiling,
    Logging,
    Tracing,
    V2Proxy,
    Experimental,
    Unsafe,
    Keel,
    Legacy,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Usage => "Usage",
            Group::Member => "Member",
            Group::Clustering => "Clustering",
            Group::Security => "Security",
            Group::Auth => "Auth",
            Group::Profiling => "Profiling and Monitoring",
            Group::Logging => "Logging",
            Group::Tracing => "Distributed tracing",
            Group::V2Proxy => "v2 Proxy (removed in etcd v3.6)",
            Group::Experimental => "Experimental feature",
            Group::Unsafe => "Unsafe feature",
            Group::Keel => "Keel",
            Group::Legacy => "Ignored etcd v2 flags",
        }
    }
}

/// What Keel does with a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// It does what etcd's does.
    Implemented,
    /// Accepted so that etcd's configurations start Keel, but not acted on:
    /// a value outside `honoured` (etcd's default when it is empty) is
    /// logged once at start and reported by `endpoint status`. Only for
    /// flags whose absence cannot weaken safety or security.
    Ignored { honoured: &'static [&'static str], would: &'static str },
    /// The flag turns on a protection (or a mode) Keel does not provide yet:
    /// any value other than etcd's default fails the start, so nobody
    /// believes the protection is on.
    Refused { why: &'static str },
}

impl Support {
    pub fn label(self) -> &'static str {
        match self {
            Support::Implemented => "implemented",
            Support::Ignored { .. } => "accepted, not yet implemented",
            Support::Refused { .. } => "refused",
        }
    }
}

pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as etcd prints it (etcd 3.6's where releases differ).
    pub default: &'static str,
    pub group: Group,
    pub since: Release,
    /// The etcd release that no longer has it.
    pub removed_in: Option<Release>,
    /// etcd 3.6's new name for a deprecated flag: a value given under the
    /// old name is taken as the new one's, and giving both is an error.
    pub replaced_by: Option<&'static str>,
    pub support: Support,
    pub usage: &'static str,
}

impl Flag {
    /// The environment variable etcd reads for this flag (`FlagToEnv`).
    pub fn env_var(&self) -> String {
        format!("ETCD_{}", self.name.to_uppercase().replace('-', "_"))
    }

    pub fn default_value(&self) -> Value {
        crate::load::parse_value(self, self.default).unwrap_or_else(|_| Value::Str(self.default.to_string()))
    }

    /// Whether `value` is one Keel acts on as asked (see [`Support`]).
    pub fn honours(&self, value: &Value) -> bool {
        match self.support {
            Support::Implemented => true,
            Support::Ignored { honoured: &[], .. } | Support::Refused { .. } => self.is_default(value),
            Support::Ignored { honoured, .. } => {
                let text = value.to_string();
                honoured.contains(&text.as_str())
            }
        }
    }

    /// Whether `value` means the same as etcd's default (an empty list or
    /// string is the default of an empty-default flag).
    pub fn is_default(&self, value: &Value) -> bool {
        if *value == self.default_value() {
            return true;
        }
        match value {
            Value::Str(text) => text.is_empty() && self.default.is_empty(),
            Value::List(items) => items.is_empty() && self.default.is_empty(),
            Value::Gates(gates) => gates.is_empty(),
            _ => false,
        }
    }
}

pub fn find(name: &str) -> Option<&'static Flag> {
    crate::table::FLAGS.iter().find(|flag| flag.name == name)
}
