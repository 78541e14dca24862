//! etcd's `--config-file`: a YAML map whose keys are the flag names, with the
//! TLS settings nested under `client-transport-security` and
//! `peer-transport-security` (the keys of etcd's `etcd.conf.yml.sample`).
//!
//! Values take etcd's YAML types: numbers for counts and milliseconds,
//! integer nanoseconds for durations, comma-separated strings for URL lists,
//! sequences for string lists. Keel also takes a Go duration string
//! ("10m") and a sequence of URLs, which etcd refuses. Unlike etcd, which
//! ignores them, unknown keys are an error: a misspelt key would otherwise
//! silently leave a setting at its default.

use serde_yaml::Value as Yaml;

use crate::error::ConfigError;
use crate::flag::{find, Flag, Kind, Value};
use crate::goflag;
use crate::load::{parse_value, Settings};

/// The flag each key of a `*-transport-security` map sets.
const CLIENT_SECURITY: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-file", "client-cert-file"),
    ("client-key-file", "client-key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
    ("crl-file", "client-crl-file"),
];

const PEER_SECURITY: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-file", "peer-client-cert-file"),
    ("client-key-file", "peer-client-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
    ("crl-file", "peer-crl-file"),
    ("skip-client-san-verification", "peer-skip-client-san-verification"),
];

/// etcd 3.5's `socket-options:` map.
const SOCKET_OPTIONS: &[(&str, &str)] =
    &[("reuse-port", "socket-reuse-port"), ("reuse-address", "socket-reuse-address")];

/// Flags that have no key in a config file.
const NOT_IN_FILE: &[&str] = &["config-file", "version"];

/// Reads and parses the config file at `path`.
pub fn read(path: &str) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::invalid(format!("open {path}: {}", io_reason(&err))))?;
    parse(&text)
}

/// Go's wording for the usual I/O errors, so messages read as etcd's.
fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    }
}

pub fn parse(text: &str) -> Result<Settings, ConfigError> {
    let document: Yaml = serde_yaml::from_str(text)
        .map_err(|err| ConfigError::invalid(format!("error converting YAML to JSON: yaml: {err}")))?;
    let mut settings = Settings::default();
    let map = match document {
        Yaml::Null => return Ok(settings),
        Yaml::Mapping(map) => map,
        _ => return Err(ConfigError::invalid("config file: expected a map of settings")),
    };
    for (key, value) in map {
        let key = key_name(&key)?;
        match key.as_str() {
            "client-transport-security" => read_security(&key, value, CLIENT_SECURITY, &mut settings)?,
            "peer-transport-security" => read_security(&key, value, PEER_SECURITY, &mut settings)?,
            "socket-options" => read_security(&key, value, SOCKET_OPTIONS, &mut settings)?,
            // etcd 3.6 reads its old misspelling too.
            "experimental-snapshot-catch-up-entries" => {
                set(flag("experimental-snapshot-catchup-entries"), &key, value, &mut settings)?
            }
            name => match find(name).filter(|flag| !NOT_IN_FILE.contains(&flag.name)) {
                Some(flag) => set(flag, &key, value, &mut settings)?,
                None => return Err(ConfigError::invalid(format!("config file: unknown key {key:?}"))),
            },
        }
    }
    Ok(settings)
}

fn flag(name: &str) -> &'static Flag {
    find(name).unwrap_or_else(|| panic!("{name} is in the table"))
}

fn key_name(key: &Yaml) -> Result<String, ConfigError> {
    match key {
        Yaml::String(name) => Ok(name.clone()),
        other => Err(ConfigError::invalid(format!(
            "config file: key {} is not a string",
            scalar_text(other).unwrap_or_default()
        ))),
    }
}

fn read_security(
    section: &str,
    value: Yaml,
    keys: &[(&str, &str)],
    settings: &mut Settings,
) -> Result<(), ConfigError> {
    let map = match value {
        Yaml::Null => return Ok(()),
        Yaml::Mapping(map) => map,
        _ => return Err(ConfigError::invalid(format!("invalid {section}"))),
    };
    for (key, value) in map {
        let key = key_name(&key)?;
        let Some((_, name)) = keys.iter().find(|(yaml_key, _)| *yaml_key == key) else {
            return Err(ConfigError::invalid(format!("config file: unknown key \"{section}.{key}\"")));
        };
        set(flag(name), &format!("{section}.{key}"), value, settings)?;
    }
    Ok(())
}

/// Sets `flag` from a YAML value; a null leaves the default, as in etcd.
fn set(flag: &'static Flag, key: &str, value: Yaml, settings: &mut Settings) -> Result<(), ConfigError> {
    if value.is_null() {
        return Ok(());
    }
    let parsed = convert(flag, &value)
        .map_err(|err| ConfigError::invalid(format!("config file: invalid value for {key:?}: {err}")))?;
    settings.set(flag, parsed);
    Ok(())
}

fn convert(flag: &Flag, value: &Yaml) -> Result<Value, String> {
    match (flag.kind, value) {
        (Kind::Bool | Kind::Legacy, Yaml::Bool(value)) => Ok(Value::Bool(*value)),
        // YAML 1.1 booleans, which etcd's YAML reader takes as booleans.
        (Kind::Bool | Kind::Legacy, Yaml::String(text)) => match text.as_str() {
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Ok(Value::Bool(true)),
            "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Ok(Value::Bool(false)),
            _ => Err(format!("expected a boolean, not {text:?}")),
        },
        (Kind::Duration, Yaml::Number(number)) => {
            let nanos = number.as_i64().ok_or_else(|| format!("expected integer nanoseconds, not {number}"))?;
            Ok(Value::Duration(std::time::Duration::from_nanos(nanos.max(0) as u64)))
        }
        (Kind::Duration, Yaml::String(text)) => goflag::parse_duration(text)
            .map(|duration| Value::Duration(duration.unwrap_or_default()))
            .map_err(|_| format!("invalid duration {text:?}")),
        (Kind::Urls, Yaml::Sequence(items)) | (Kind::Strings | Kind::Choices(_), Yaml::Sequence(items)) => {
            let texts = items
                .iter()
                .map(|item| scalar_text(item).ok_or("expected a list of strings"))
                .collect::<Result<Vec<_>, _>>()?;
            parse_value(flag, &texts.join(","))
        }
        (Kind::FeatureGates, Yaml::Mapping(gates)) => {
            let mut entries = Vec::new();
            for (name, enabled) in gates {
                entries.push(format!(
                    "{}={}",
                    scalar_text(name).unwrap_or_default(),
                    scalar_text(enabled).unwrap_or_default()
                ));
            }
            parse_value(flag, &entries.join(","))
        }
        (Kind::Uint | Kind::Uint32 | Kind::Int, Yaml::String(text)) => Err(format!("expected a number, not {text:?}")),
        (_, Yaml::Sequence(_) | Yaml::Mapping(_) | Yaml::Tagged(_)) => Err("expected a single value".to_string()),
        (_, scalar) => {
            let text = scalar_text(scalar).ok_or("expected a single value")?;
            parse_value(flag, &text)
        }
    }
}

fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Number(number) => Some(number.to_string()),
        Yaml::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}
