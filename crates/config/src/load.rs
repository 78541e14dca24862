//! From a command line, an environment and perhaps a YAML file to one set of
//! explicitly given values, in etcd's order: flags are parsed first (Go's
//! `flag` syntax), `--version` and `--help` answered, then either the config
//! file replaces everything else, or `ETCD_*` variables fill what the command
//! line left unset.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::ConfigError;
use crate::flag::{find, Flag, Kind, Support, Value};
use crate::table::FLAGS;

/// What the command line asks for.
#[derive(Debug)]
pub enum Outcome {
    /// Start with this configuration; log the notices once logging is up.
    Run {
        config: Box<Config>,
        notices: Vec<Notice>,
    },
    Help,
    Version,
}

/// A message for the log that loading produced before logging existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

impl Notice {
    pub(crate) fn info(message: impl Into<String>) -> Self {
        Notice { level: Level::Info, message: message.into() }
    }

    pub(crate) fn warn(message: impl Into<String>) -> Self {
        Notice { level: Level::Warn, message: message.into() }
    }
}

/// The values given explicitly, by flag name (etcd 3.6's name for renamed
/// flags), wherever they came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<&'static str, Value>,
}

impl Settings {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static Flag, &Value)> {
        self.values.iter().map(|(name, value)| (find(name).expect("settings hold table flags"), value))
    }

    pub(crate) fn set(&mut self, flag: &'static Flag, value: Value) {
        self.values.insert(flag.name, value);
    }

    fn remove(&mut self, name: &str) -> Option<Value> {
        self.values.remove(name)
    }
}

/// A flag whose value Keel accepted but does not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredFlag {
    pub flag: &'static str,
    pub value: String,
    pub would: &'static str,
}

impl std::fmt::Display for IgnoredFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--{}={} is accepted but not implemented by Keel (it would {}); ignored",
            self.flag, self.value, self.would
        )
    }
}

/// Loads the configuration as `etcd` would from `args` (without the program
/// name) and `env`.
pub fn load<A, E>(args: A, env: E) -> Result<Outcome, ConfigError>
where
    A: IntoIterator<Item = String>,
    E: IntoIterator<Item = (String, String)>,
{
    let args: Vec<String> = args.into_iter().collect();
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let command_line = match parse_command_line(&args)? {
        Parsed::Help => return Ok(Outcome::Help),
        Parsed::Flags(flags) => flags,
    };
    if let Some(extra) = command_line.positional.first() {
        return Err(ConfigError::invalid(format!("'{extra}' is not a valid flag")));
    }
    if matches!(command_line.settings.get("version"), Some(Value::Bool(true))) {
        return Ok(Outcome::Version);
    }

    let mut notices = Vec::new();
    let config_file = match command_line.settings.get("config-file") {
        Some(Value::Str(path)) if !path.is_empty() => Some(path.clone()),
        _ => env.get("ETCD_CONFIG_FILE").filter(|path| !path.is_empty()).cloned(),
    };
    let mut settings = match &config_file {
        Some(path) => {
            let settings = crate::file::read(path)?;
            notices.push(Notice::info(format!(
                "loaded server configuration from {path:?}; other configuration command line flags and environment variables will be ignored if provided"
            )));
            settings
        }
        None => {
            let mut settings = command_line.settings;
            apply_env(&mut settings, &env, &mut notices)?;
            settings
        }
    };
    canonicalise(&mut settings, &mut notices)?;
    crate::config::check_bootstrap(&settings)?;
    let ignored = check_support(&settings, &mut notices)?;
    let config = Config::from_settings(settings, ignored, config_file.is_some(), &mut notices)?;
    Ok(Outcome::Run { config: Box::new(config), notices })
}

enum Parsed {
    Help,
    Flags(CommandLine),
}

struct CommandLine {
    settings: Settings,
    positional: Vec<String>,
}

/// Go's `flag.FlagSet.Parse`: `-name` and `--name` alike, `=value` or the
/// next argument (never the next argument for booleans), parsing stops at
/// the first non-flag or after `--`.
fn parse_command_line(args: &[String]) -> Result<Parsed, ConfigError> {
    let mut settings = Settings::default();
    let mut rest = args;
    while let Some((arg, after)) = rest.split_first() {
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        rest = after;
        if arg == "--" {
            break;
        }
        let name = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(ConfigError::Syntax(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match name.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (name, None),
        };
        let Some(flag) = find(name) else {
            if name == "help" || name == "h" {
                return Ok(Parsed::Help);
            }
            return Err(ConfigError::Syntax(format!("flag provided but not defined: -{name}")));
        };
        let value = if flag.kind.is_bool() {
            let text = inline.unwrap_or("true");
            flag.kind
                .parse(text)
                .map_err(|err| ConfigError::Syntax(format!("invalid boolean value {text:?} for -{name}: {err}")))?
        } else {
            let text = match inline {
                Some(text) => text,
                None => {
                    let (next, after) = rest
                        .split_first()
                        .ok_or_else(|| ConfigError::Syntax(format!("flag needs an argument: -{name}")))?;
                    rest = after;
                    next
                }
            };
            parse_value(flag, text)
                .map_err(|err| ConfigError::Syntax(format!("invalid value {text:?} for flag -{name}: {err}")))?
        };
        settings.set(flag, value);
    }
    Ok(Parsed::Flags(CommandLine { settings, positional: rest.to_vec() }))
}

/// A flag's value from text, as etcd's flag type parses it; URL flags whose
/// default is empty take an empty value (etcd's allowed exceptions).
pub(crate) fn parse_value(flag: &Flag, text: &str) -> Result<Value, String> {
    // etcd's URL flags all allow the empty value (no URLs).
    if flag.kind == Kind::Urls && text.is_empty() {
        return Ok(Value::Urls(Vec::new()));
    }
    flag.kind.parse(text)
}

/// etcd's `SetFlagsFromEnv`: each flag not given on the command line takes
/// a non-empty `ETCD_<NAME>`; one given both ways is an error.
fn apply_env(
    settings: &mut Settings,
    env: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Result<(), ConfigError> {
    let mut used = Vec::new();
    for flag in FLAGS {
        let key = flag.env_var();
        let Some(text) = env.get(&key) else { continue };
        used.push(key.clone());
        if flag.name == "version" {
            notices.push(Notice::warn(format!("cannot set special environment variable {key}={text}")));
            continue;
        }
        if settings.is_set(flag.name) {
            return Err(ConfigError::invalid(format!(
                "conflicting environment variable {key:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            )));
        }
        if text.is_empty() {
            continue;
        }
        let value = parse_value(flag, text)
            .map_err(|err| ConfigError::invalid(format!("invalid value {text:?} for {key}: {err}")))?;
        notices.push(Notice::info(format!("recognized and used environment variable {key}={text}")));
        settings.set(flag, value);
    }
    for (key, text) in env {
        if key.starts_with("ETCD_") && !used.contains(key) {
            notices.push(Notice::warn(format!("unrecognized environment variable {key}={text}")));
        }
    }
    Ok(())
}

/// Moves values given under etcd's deprecated names to etcd 3.6's names,
/// with 3.6's error when both are given, and warns about legacy names.
fn canonicalise(settings: &mut Settings, notices: &mut Vec<Notice>) -> Result<(), ConfigError> {
    for flag in FLAGS {
        if flag.kind == Kind::Legacy && settings.remove(flag.name).is_some() {
            notices.push(Notice::warn(format!("flag \"-{}\" is no longer supported - ignoring.", flag.name)));
            continue;
        }
        let Some(new_name) = flag.replaced_by else { continue };
        let Some(value) = settings.remove(flag.name) else { continue };
        if settings.is_set(new_name) {
            return Err(ConfigError::invalid(format!(
                "cannot set --{} and --{new_name} at the same time, please use --{new_name} only",
                flag.name
            )));
        }
        notices.push(Notice::warn(format!("--{} is deprecated; use --{new_name} instead", flag.name)));
        settings.set(find(new_name).expect("replacements are in the table"), value);
    }
    // etcd 3.4's --debug is --log-level=debug, whatever --log-level says.
    if let Some(Value::Bool(debug)) = settings.remove("debug") {
        notices.push(Notice::warn("--debug is deprecated; use --log-level=debug instead"));
        if debug {
            settings.set(find("log-level").expect("log-level is in the table"), Value::Str("debug".into()));
        }
    }
    Ok(())
}

/// Refuses flags that would turn on a protection Keel lacks; lists the
/// accepted ones Keel does not act on.
fn check_support(settings: &Settings, notices: &mut Vec<Notice>) -> Result<Vec<IgnoredFlag>, ConfigError> {
    let mut ignored = Vec::new();
    for (flag, value) in settings.iter() {
        if flag.honours(value) {
            continue;
        }
        match flag.support {
            Support::Implemented => {}
            Support::Refused { why } => return Err(ConfigError::Refused { flag: flag.name, why }),
            Support::Ignored { would, .. } => {
                let entry = IgnoredFlag { flag: flag.name, value: value.to_string(), would };
                notices.push(Notice::warn(entry.to_string()));
                ignored.push(entry);
            }
        }
    }
    Ok(ignored)
}
