//! A command-line parser with spf13/pflag's grammar and error texts, since
//! etcdctl's users (and scripts matching its stderr) see exactly those.
//!
//! Grammar: `--name=value`, `--name value`, bool `--name` / `--name=false`,
//! shorthands `-w json`, `-wjson`, `-w=json` and grouped bools `-ih`,
//! positional arguments anywhere, and `--` ending the flags.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::gostr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    Int64,
    Duration,
    /// pflag's `StringSlice`: comma separated; the first use replaces the
    /// default, later uses append.
    StringSlice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagSpec {
    pub name: &'static str,
    pub shorthand: Option<char>,
    pub kind: Kind,
    /// The default as pflag prints it (`DefValue`): `5s`, `[127.0.0.1:2379]`.
    pub default: &'static str,
    pub usage: &'static str,
}

impl FlagSpec {
    pub const fn new(name: &'static str, kind: Kind, default: &'static str, usage: &'static str) -> FlagSpec {
        FlagSpec { name, shorthand: None, kind, default, usage }
    }

    pub const fn short(mut self, shorthand: char) -> FlagSpec {
        self.shorthand = Some(shorthand);
        self
    }

    /// pflag's `NoOptDefVal`: only bools may be given without a value.
    pub fn takes_no_value(&self) -> bool {
        self.kind == Kind::Bool
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    String(String),
    Int64(i64),
    Duration(Duration),
    StringSlice(Vec<String>),
}

/// pflag's parse failures; `Display` is pflag's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("unknown flag: --{0}")]
    UnknownFlag(String),
    #[error("unknown shorthand flag: '{flag}' in -{group}")]
    UnknownShorthand { flag: char, group: String },
    #[error("flag needs an argument: {0}")]
    NeedsArgument(String),
    #[error("flag needs an argument: '{flag}' in -{group}")]
    ShorthandNeedsArgument { flag: char, group: String },
    #[error("invalid argument {} for {} flag: {reason}", gostr::quote(.value.as_bytes()), gostr::quote(.flag.as_bytes()))]
    InvalidValue { value: String, flag: String, reason: String },
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
}

/// The flags of one command line, their values and the positional arguments.
#[derive(Debug, Clone)]
pub struct Parsed {
    specs: Vec<FlagSpec>,
    values: BTreeMap<&'static str, Value>,
    changed: BTreeSet<&'static str>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn new(specs: &[FlagSpec]) -> Parsed {
        let values = specs.iter().map(|spec| (spec.name, default_value(spec))).collect();
        Parsed { specs: specs.to_vec(), values, changed: BTreeSet::new(), positional: Vec::new() }
    }

    fn spec(&self, name: &str) -> Option<FlagSpec> {
        self.specs.iter().find(|s| s.name == name).copied()
    }

    fn spec_short(&self, c: char) -> Option<FlagSpec> {
        self.specs.iter().find(|s| s.shorthand == Some(c)).copied()
    }

    /// Sets a flag as pflag's `Set` does (also used for `ETCDCTL_*`
    /// variables); the error is the reason only, without the flag name.
    /// Replaces a string slice's value (endpoints found by DNS discovery).
    pub fn replace_strings(&mut self, name: &'static str, values: Vec<String>) {
        self.values.insert(name, Value::StringSlice(values));
    }

    pub fn set(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let spec = self.spec(name).ok_or_else(|| format!("no such flag -{name}"))?;
        let value = match spec.kind {
            Kind::Bool => Value::Bool(gostr::parse_bool(raw)?),
            Kind::String => Value::String(raw.to_owned()),
            Kind::Int64 => Value::Int64(gostr::parse_int(raw, 0)?),
            Kind::Duration => Value::Duration(gostr::parse_duration(raw)?),
            Kind::StringSlice => {
                let items: Vec<String> =
                    if raw.is_empty() { Vec::new() } else { raw.split(',').map(str::to_owned).collect() };
                match self.values.get_mut(spec.name) {
                    Some(Value::StringSlice(old)) if self.changed.contains(spec.name) => {
                        old.extend(items);
                        Value::StringSlice(std::mem::take(old))
                    }
                    _ => Value::StringSlice(items),
                }
            }
        };
        self.values.insert(spec.name, value);
        self.changed.insert(spec.name);
        Ok(())
    }

    fn set_flag(&mut self, spec: FlagSpec, raw: &str) -> Result<(), FlagError> {
        self.set(spec.name, raw).map_err(|reason| {
            let flag = match spec.shorthand {
                Some(c) => format!("-{c}, --{}", spec.name),
                None => format!("--{}", spec.name),
            };
            FlagError::InvalidValue { value: raw.to_owned(), flag, reason }
        })
    }

    pub fn changed(&self, name: &str) -> bool {
        self.changed.contains(name)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    pub fn string(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(Value::String(s)) => s,
            _ => "",
        }
    }

    pub fn int64(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int64(v)) => *v,
            _ => 0,
        }
    }

    pub fn duration(&self, name: &str) -> Duration {
        match self.values.get(name) {
            Some(Value::Duration(d)) => *d,
            _ => Duration::ZERO,
        }
    }

    pub fn strings(&self, name: &str) -> &[String] {
        match self.values.get(name) {
            Some(Value::StringSlice(v)) => v,
            _ => &[],
        }
    }

    /// Parses `args` as pflag's `FlagSet.Parse` does, interspersed.
    pub fn parse(&mut self, args: &[String]) -> Result<(), FlagError> {
        let mut rest = args;
        while let Some((arg, tail)) = rest.split_first() {
            rest = tail;
            if arg.len() < 2 || !arg.starts_with('-') {
                self.positional.push(arg.clone());
                continue;
            }
            if arg == "--" {
                self.positional.extend(rest.iter().cloned());
                break;
            }
            rest = if let Some(long) = arg.strip_prefix("--") {
                self.parse_long(arg, long, rest)?
            } else {
                self.parse_shorts(&arg[1..], rest)?
            };
        }
        Ok(())
    }

    fn parse_long<'a>(&mut self, arg: &str, long: &str, rest: &'a [String]) -> Result<&'a [String], FlagError> {
        if long.is_empty() || long.starts_with('-') || long.starts_with('=') {
            return Err(FlagError::BadSyntax(arg.to_owned()));
        }
        let (name, inline) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        let spec = self.spec(name).ok_or_else(|| FlagError::UnknownFlag(name.to_owned()))?;
        let (value, rest) = match (inline, rest.split_first()) {
            (Some(value), _) => (value.to_owned(), rest),
            (None, _) if spec.takes_no_value() => ("true".to_owned(), rest),
            (None, Some((next, tail))) => (next.clone(), tail),
            (None, None) => return Err(FlagError::NeedsArgument(arg.to_owned())),
        };
        self.set_flag(spec, &value)?;
        Ok(rest)
    }

    fn parse_shorts<'a>(&mut self, mut group: &str, mut rest: &'a [String]) -> Result<&'a [String], FlagError> {
        while let Some(c) = group.chars().next() {
            let after = &group[c.len_utf8()..];
            let spec =
                self.spec_short(c).ok_or_else(|| FlagError::UnknownShorthand { flag: c, group: group.to_owned() })?;
            let value = if let Some(value) = after.strip_prefix('=').filter(|_| after.len() > 1) {
                group = "";
                value.to_owned()
            } else if spec.takes_no_value() {
                group = after;
                "true".to_owned()
            } else if !after.is_empty() {
                group = "";
                after.to_owned()
            } else if let Some((next, tail)) = rest.split_first() {
                rest = tail;
                group = "";
                next.clone()
            } else {
                return Err(FlagError::ShorthandNeedsArgument { flag: c, group: group.to_owned() });
            };
            self.set_flag(spec, &value)?;
        }
        Ok(rest)
    }
}

fn default_value(spec: &FlagSpec) -> Value {
    match spec.kind {
        Kind::Bool => Value::Bool(spec.default == "true"),
        Kind::String => Value::String(spec.default.to_owned()),
        Kind::Int64 => Value::Int64(spec.default.parse().unwrap_or(0)),
        Kind::Duration => Value::Duration(gostr::parse_duration(spec.default).unwrap_or_default()),
        Kind::StringSlice => Value::StringSlice(
            spec.default
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec::new("prefix", Kind::Bool, "false", ""),
        FlagSpec::new("limit", Kind::Int64, "0", ""),
        FlagSpec::new("write-out", Kind::String, "simple", "").short('w'),
        FlagSpec::new("interactive", Kind::Bool, "false", "").short('i'),
        FlagSpec::new("endpoints", Kind::StringSlice, "[127.0.0.1:2379]", ""),
        FlagSpec::new("dial-timeout", Kind::Duration, "2s", ""),
    ];

    fn parse(args: &[&str]) -> Result<Parsed, FlagError> {
        let mut parsed = Parsed::new(SPECS);
        parsed.parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(parsed)
    }

    fn error(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn flags_interleave_with_positional_arguments() {
        let p = parse(&["a", "--prefix", "b", "--limit=2", "-w", "json", "c"]).unwrap();
        assert_eq!(p.positional, ["a", "b", "c"]);
        assert!(p.bool("prefix"));
        assert_eq!(p.int64("limit"), 2);
        assert_eq!(p.string("write-out"), "json");
    }

    #[test]
    fn value_forms() {
        assert_eq!(parse(&["-wjson"]).unwrap().string("write-out"), "json");
        assert_eq!(parse(&["-w=json"]).unwrap().string("write-out"), "json");
        assert_eq!(parse(&["--limit", "-5"]).unwrap().int64("limit"), -5);
        assert!(!parse(&["--prefix", "--prefix=false"]).unwrap().bool("prefix"));
        assert_eq!(parse(&["--dial-timeout=1m"]).unwrap().duration("dial-timeout"), Duration::from_secs(60));
        let p = parse(&["-iw", "json"]).unwrap();
        assert!(p.bool("interactive"));
        assert_eq!(p.string("write-out"), "json");
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = parse(&["--", "--prefix", "-w"]).unwrap();
        assert_eq!(p.positional, ["--prefix", "-w"]);
        assert!(!p.bool("prefix"));
        assert_eq!(parse(&["-", "x"]).unwrap().positional, ["-", "x"]);
    }

    #[test]
    fn string_slices_replace_then_append() {
        assert_eq!(parse(&[]).unwrap().strings("endpoints"), ["127.0.0.1:2379"]);
        let p = parse(&["--endpoints=a,b", "--endpoints", "c"]).unwrap();
        assert_eq!(p.strings("endpoints"), ["a", "b", "c"]);
    }

    #[test]
    fn errors_are_pflag_texts() {
        // Captured from etcdctl 3.4.23.
        assert_eq!(error(&["--foo"]), "unknown flag: --foo");
        assert_eq!(error(&["--limit"]), "flag needs an argument: --limit");
        assert_eq!(error(&["-w"]), "flag needs an argument: 'w' in -w");
        assert_eq!(error(&["-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(error(&["-ix"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(
            error(&["--limit", "x"]),
            r#"invalid argument "x" for "--limit" flag: strconv.ParseInt: parsing "x": invalid syntax"#
        );
        assert_eq!(
            error(&["--prefix=x"]),
            r#"invalid argument "x" for "--prefix" flag: strconv.ParseBool: parsing "x": invalid syntax"#
        );
        assert_eq!(
            error(&["--dial-timeout=x"]),
            r#"invalid argument "x" for "--dial-timeout" flag: time: invalid duration "x""#
        );
        assert_eq!(error(&["---x"]), "bad flag syntax: ---x");
    }
}
