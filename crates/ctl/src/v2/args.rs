//! etcdctl v2's argument grammar: Go's `flag` package (`-x`, `--x`,
//! `--x=v`, `--x v`; parsing stops at the first non-flag and consumes a
//! `--`), and urfave/cli v1's reordering of a command's arguments, which
//! moves the command's own flags (and the word after each) to the front.
//! See etcd-v2-reference.md 9.2 for the observed cases this reproduces.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    Int,
    String,
    Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The name and its aliases (urfave's `"recursive, r"`).
    pub names: &'static [&'static str],
    pub kind: FlagKind,
}

pub const fn flag(names: &'static [&'static str], kind: FlagKind) -> Flag {
    Flag { names, kind }
}

/// A Go `flag` parse error, in Go's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("bad flag syntax: {0}")]
    Syntax(String),
    #[error("flag needs an argument: -{0}")]
    NeedsArgument(String),
    #[error("invalid value {} for flag -{name}: {reason}", crate::gostr::quote(.value.as_bytes()))]
    Invalid { name: String, value: String, reason: String },
    #[error("invalid boolean value {} for -{name}: {reason}", crate::gostr::quote(.value.as_bytes()))]
    InvalidBool { name: String, value: String, reason: String },
}

/// Parsed flags by canonical (first) name, and what follows them.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: HashMap<&'static str, String>,
    pub args: Vec<String>,
}

impl Parsed {
    pub fn bool(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v == "true")
    }
    pub fn string(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    pub fn int(&self, name: &str) -> i64 {
        self.values.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

fn find<'a>(flags: &'a [Flag], name: &str) -> Option<&'a Flag> {
    flags.iter().find(|f| f.names.contains(&name))
}

/// Go's `FlagSet.Parse`.
pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        let dashes = if s.starts_with("--") { 2 } else { 1 };
        if s == "--" {
            i += 1;
            break;
        }
        let name = &s[dashes..];
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(ParseError::Syntax(s.clone()));
        }
        i += 1;
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        let Some(spec) = find(flags, name) else {
            return Err(ParseError::Undefined(name.to_owned()));
        };
        let value = match (spec.kind, value) {
            (FlagKind::Bool, None) => "true".to_owned(),
            (FlagKind::Bool, Some(v)) => match crate::gostr::parse_bool(&v) {
                Ok(b) => b.to_string(),
                Err(_) => {
                    return Err(ParseError::InvalidBool {
                        name: name.to_owned(),
                        value: v,
                        reason: "parse error".into(),
                    })
                }
            },
            (_, Some(v)) => v,
            (_, None) if i < args.len() => {
                i += 1;
                args[i - 1].clone()
            }
            (_, None) => return Err(ParseError::NeedsArgument(name.to_owned())),
        };
        // Go's flag package reports its own words, not strconv's.
        let invalid = |reason: String| ParseError::Invalid {
            name: name.to_owned(),
            value: value.clone(),
            reason: if reason.contains("range") { "value out of range" } else { "parse error" }.to_owned(),
        };
        match spec.kind {
            FlagKind::Int => {
                crate::gostr::parse_int(&value, 0).map_err(invalid)?;
            }
            FlagKind::Duration => {
                crate::gostr::parse_duration(&value).map_err(invalid)?;
            }
            _ => {}
        }
        parsed.values.insert(spec.names[0], value);
    }
    parsed.args = args[i..].to_vec();
    Ok(parsed)
}

/// Whether `arg` names one of `flags` (`-x`, `--x`, `--x=v`).
fn is_known_flag(flags: &[Flag], arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-') else { return false };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.split('=').next().unwrap_or_default();
    !name.is_empty() && find(flags, name).is_some()
}

/// urfave/cli's reordering before a command's flags are parsed.
pub fn reorder(flags: &[Flag], args: &[String]) -> Vec<String> {
    let mut reordered = Vec::new();
    let mut remaining = Vec::new();
    let mut expect_value = false;
    for (i, a) in args.iter().enumerate() {
        if expect_value && !is_known_flag(flags, a) {
            reordered.push(a.clone());
            expect_value = false;
        } else if a == "--" {
            let mut front = vec![a.clone()];
            front.append(&mut remaining);
            front.extend(args[i + 1..].iter().cloned());
            remaining = front;
            break;
        } else if is_known_flag(flags, a) {
            reordered.push(a.clone());
            expect_value = !a.contains('=');
        } else {
            remaining.push(a.clone());
        }
    }
    reordered.extend(remaining);
    reordered
}

/// A command's arguments as its action sees them: reordered, then parsed.
pub fn parse_command(flags: &[Flag], args: &[String]) -> Result<Parsed, ParseError> {
    parse(flags, &reorder(flags, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &[Flag] = &[
        flag(&["ttl"], FlagKind::Int),
        flag(&["swap-with-value"], FlagKind::String),
        flag(&["swap-with-index"], FlagKind::Int),
    ];
    const MK: &[Flag] = &[flag(&["in-order"], FlagKind::Bool), flag(&["ttl"], FlagKind::Int)];
    const EXEC: &[Flag] = &[flag(&["after-index"], FlagKind::Int), flag(&["recursive", "r"], FlagKind::Bool)];

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn run(flags: &[Flag], s: &[&str]) -> (Parsed, Vec<String>) {
        let p = parse_command(flags, &words(s)).unwrap();
        let args = p.args.clone();
        (p, args)
    }

    // The observed cases of etcd-v2-reference.md 9.2.
    #[test]
    fn flags_move_to_the_front() {
        for line in [&["/p6", "--ttl", "5", "v"][..], &["/p4", "v", "--ttl=5"], &["--ttl", "5", "/p5", "v"]] {
            let (p, args) = run(SET, line);
            assert_eq!(p.int("ttl"), 5, "{line:?}");
            assert_eq!(args.len(), 2, "{line:?}");
        }
    }

    #[test]
    fn dashes_and_delimiters() {
        assert_eq!(run(SET, &["/p1", "-5"]).1, words(&["/p1", "-5"]));
        assert_eq!(run(SET, &["--", "/p2", "-5"]).1, words(&["/p2", "-5"]));
        assert_eq!(run(SET, &["/p3", "--", "-5"]).1, words(&["/p3", "-5"]));
        assert_eq!(run(SET, &["/p7", "v", "--bogus"]).1, words(&["/p7", "v", "--bogus"]));
        assert_eq!(
            parse_command(SET, &words(&["--bogus", "/p"])).unwrap_err().to_string(),
            "flag provided but not defined: -bogus"
        );
    }

    #[test]
    fn a_boolean_swallows_the_next_word() {
        let (p, args) = run(MK, &["--in-order", "/q", "job3", "--ttl", "50"]);
        assert!(p.bool("in-order"));
        assert_eq!(p.int("ttl"), 0);
        assert_eq!(args, words(&["/q", "--ttl", "50", "job3"]));
    }

    #[test]
    fn exec_watch_forms() {
        assert_eq!(run(EXEC, &["/w1", "--", "sh", "-c", "x"]).1, words(&["/w1", "sh", "-c", "x"]));
        assert_eq!(run(EXEC, &["-r", "/w2", "--", "echo", "hi"]).1, words(&["/w2", "--", "echo", "hi"]));
    }
}
