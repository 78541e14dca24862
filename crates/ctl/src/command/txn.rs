//! `txn`: etcdctl's transaction script, from stdin: compares, a blank line,
//! the success ops, a blank line, the failure ops, a blank line.
//!
//! ```text
//! mod("key1") > "0"
//!
//! put key1 "overwrote-key1"
//!
//! put key1 "created-key1"
//! ```

use std::io::{BufRead, BufReader};

use keel_client::{Compare, CompareOp, Txn, TxnOp};

use super::{del, find_next, get, put, Command, HELP};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::gostr;

pub const TXN: Command = Command {
    name: "txn",
    short: "Txn processes all the requests in one transaction",
    usage: "txn [options]",
    long: "",
    flags: &[FlagSpec::new("interactive", Kind::Bool, "false", "Input transaction in interactive mode").short('i')],
    run,
};

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(Failure::exit(exit::BAD_ARGS, "txn command does not accept argument"));
    }
    let printer = ctx.setup()?;
    let interactive = ctx.flags.bool("interactive");
    // Read on this thread before the runtime starts: stdin blocks.
    let txn = {
        let stdout = &mut *ctx.io.stdout;
        let mut prompt = |text: &str| {
            if interactive {
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }
        };
        let mut reader = BufReader::new(&mut *ctx.io.stdin);
        prompt("compares:");
        let compares = read_section(&mut reader, parse_compare)?;
        prompt("success requests (get, put, del):");
        let success = read_section(&mut reader, parse_op)?;
        prompt("failure requests (get, put, del):");
        let failure = read_section(&mut reader, parse_op)?;
        Txn::new().when(compares).and_then(success).or_else(failure)
    };
    let response = ctx.call(|client| async move { client.txn(txn).await })?;
    printer.txn(ctx.io.stdout, &response)
}

/// Lines up to the first blank one. As with Go's `ReadString('\n')`, input
/// ending without a newline is an error (`EOF`), even after text.
fn read_section<T>(reader: &mut dyn BufRead, parse: fn(&str) -> Result<T, Failure>) -> Result<Vec<T>, Failure> {
    let mut items = Vec::new();
    loop {
        let mut raw = Vec::new();
        let eof = || Failure::exit(exit::INVALID_INPUT, "EOF");
        reader.read_until(b'\n', &mut raw).map_err(|e| Failure::exit(exit::INVALID_INPUT, e.to_string()))?;
        if raw.last() != Some(&b'\n') {
            return Err(eof());
        }
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_matches(is_go_space);
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
}

/// `unicode.IsSpace`, as `strings.TrimSpace` uses it.
fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' | '\u{85}' | '\u{a0}') || (c.is_whitespace() && c > '\u{ff}')
}

/// etcdctl's `parseCompare`: `target("key") op "value"`.
pub fn parse_compare(line: &str) -> Result<Compare, Failure> {
    let invalid = |message: String| Failure::exit(exit::INVALID_INPUT, message);
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid(format!("malformed comparison: {line}")));
    };
    let scanned = scan_compare(rest);
    let (key, op, value) = match scanned {
        Scanned::All(key, op, value) => (key, op, value),
        Scanned::Partial(key, op, value) => {
            return Err(invalid(format!(
                "malformed comparison: {line}; got {target}({}) {op} {}",
                gostr::quote(key.as_bytes()),
                gostr::quote(value.as_bytes())
            )))
        }
    };
    let number =
        |base: u32| gostr::parse_int(&value, base).map_err(|_| invalid(format!("invalid txn compare request: {line}")));
    let compare_op = || match op.as_str() {
        "=" => Ok(CompareOp::Equal),
        "!=" => Ok(CompareOp::NotEqual),
        ">" => Ok(CompareOp::Greater),
        "<" => Ok(CompareOp::Less),
        // clientv3.Compare panics on any other operator.
        _ => Err(Failure::Panic("Unknown result op".to_owned())),
    };
    // etcdctl parses the number before building the comparison (where a
    // bad operator panics), so a bad number is reported first.
    match target {
        "ver" | "version" => {
            let v = number(10)?;
            Ok(Compare::version(key, compare_op()?, v))
        }
        "c" | "create" => {
            let v = number(10)?;
            Ok(Compare::create_revision(key, compare_op()?, v))
        }
        "m" | "mod" => {
            let v = number(10)?;
            Ok(Compare::mod_revision(key, compare_op()?, v))
        }
        "val" | "value" => Ok(Compare::value(key, compare_op()?, value.clone())),
        "lease" => {
            let v = number(16)?;
            Ok(Compare::lease(key, compare_op()?, v))
        }
        _ => Err(invalid(format!("malformed comparison: {line} (unknown target {target})"))),
    }
}

enum Scanned {
    All(String, String, String),
    /// What `fmt.Sscanf` filled before it stopped.
    Partial(String, String, String),
}

/// `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)`.
fn scan_compare(input: &str) -> Scanned {
    let mut s = input;
    let Some((key, after)) = scan_quoted(s) else {
        return Scanned::Partial(String::new(), String::new(), String::new());
    };
    s = after;
    let Some(after) = s.strip_prefix(')') else { return Scanned::Partial(key, String::new(), String::new()) };
    s = after.trim_start_matches(is_scan_space);
    let op_len = s.find(is_scan_space).unwrap_or(s.len());
    if op_len == 0 {
        return Scanned::Partial(key, String::new(), String::new());
    }
    let op = s[..op_len].to_owned();
    s = &s[op_len..];
    match scan_quoted(s) {
        Some((value, _)) => Scanned::All(key, op, value),
        None => Scanned::Partial(key, op, String::new()),
    }
}

fn is_scan_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// `%q`: skips spaces, then a Go double- or back-quoted string.
fn scan_quoted(input: &str) -> Option<(String, &str)> {
    let s = input.trim_start_matches(is_scan_space);
    let quote = s.chars().next()?;
    let end = match quote {
        '`' => s[1..].find('`')? + 2,
        '"' => {
            let mut escaped = false;
            let mut end = None;
            for (i, c) in s.char_indices().skip(1) {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            end?
        }
        _ => return None,
    };
    let value = gostr::unquote(&s[..end]).ok()?;
    Some((value, &s[end..]))
}

/// etcdctl's `argify`: the regular expression
/// `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`, then unquoting.
pub fn argify(line: &str) -> Result<Vec<String>, Failure> {
    // RE2's \s is ASCII only.
    let space = |b: u8| matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if space(b) {
            i += 1;
            continue;
        }
        let end = match b {
            b'"' => {
                let mut j = i + 1;
                let mut found = None;
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' if j + 1 < bytes.len() => j += 2,
                        b'\\' => break,
                        b'"' => {
                            found = Some(j + 1);
                            break;
                        }
                        _ => j += 1,
                    }
                }
                found
            }
            b'\'' => bytes[i + 1..].iter().position(|&c| c == b'\'').map(|p| i + p + 2),
            _ => Some(bytes[i..].iter().position(|&c| space(c)).map_or(bytes.len(), |p| i + p)),
        };
        let Some(end) = end else {
            // No match starts here; the regexp moves on one character.
            i += line[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let token = &line[i..end];
        let arg = match b {
            b'\'' => token[1..token.len() - 1].to_owned(),
            b'"' => gostr::unquote(token).map_err(|e| Failure::exit(exit::INVALID_INPUT, e))?,
            _ => token.to_owned(),
        };
        args.push(arg);
        i = end;
    }
    Ok(args)
}

/// etcdctl's `parseRequestUnion`: the line run as a `put`, `get` or `del`
/// command line of its own.
pub fn parse_op(line: &str) -> Result<TxnOp, Failure> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(Failure::exit(exit::INVALID_INPUT, format!("invalid txn compare request: {line}")));
    }
    // TODO: cobra also prints its default usage text to stderr when a
    // line's flags do not parse.
    let invalid = || Failure::exit(exit::INVALID_INPUT, format!("invalid txn request: {line}"));
    let name = find_next(&["del", "get", "put"], &args[0]).ok_or_else(invalid)?;
    let local: &[FlagSpec] = match name {
        "get" => get::FLAGS,
        "put" => put::FLAGS,
        _ => del::FLAGS,
    };
    let specs: Vec<FlagSpec> = local.iter().copied().chain([HELP]).collect();
    let mut flags = Parsed::new(&specs);
    flags.parse(&args[1..]).map_err(|_| invalid())?;
    let positional = flags.positional.clone();
    Ok(match name {
        "get" => {
            let (key, options) = get::get_op(&flags, &positional)?;
            TxnOp::get(key, options)
        }
        "put" => {
            let (key, value, options) = put::put_op(&flags, &positional, None)?;
            TxnOp::put(key, value, options)
        }
        _ => {
            let (key, options) = del::del_op(&flags, &positional)?;
            TxnOp::delete(key, options)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(result: Result<impl std::fmt::Debug, Failure>) -> (i32, String) {
        match result.unwrap_err() {
            Failure::Exit { code, message } => (code, message),
            Failure::Panic(message) => (2, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn argify_splits_like_etcdctl() {
        assert_eq!(argify(r#"put "" v"#).unwrap(), ["put", "", "v"]);
        assert_eq!(argify(r#"put k "a b\n""#).unwrap(), ["put", "k", "a b\n"]);
        assert_eq!(argify("put k 'x y'").unwrap(), ["put", "k", "x y"]);
        assert_eq!(argify("get t/ --prefix --limit=2").unwrap(), ["get", "t/", "--prefix", "--limit=2"]);
    }

    #[test]
    fn compares_parse() {
        let wire = parse_compare(r#"val("t/x") = "1""#).unwrap().into_proto();
        assert_eq!(wire.key, b"t/x");
        let wire = parse_compare(r#"mod("t/x") > "1000""#).unwrap().into_proto();
        assert_eq!(wire.key, b"t/x");
    }

    #[test]
    fn compare_errors_are_etcdctl_texts() {
        // Captured from etcdctl 3.4.23.
        assert_eq!(error(parse_compare("bad")), (3, "malformed comparison: bad".into()));
        assert_eq!(
            error(parse_compare(r#"ver("a") = "x""#)),
            (3, r#"invalid txn compare request: ver("a") = "x""#.into())
        );
        assert_eq!(
            error(parse_compare(r#"foo("a") = "1""#)),
            (3, r#"malformed comparison: foo("a") = "1" (unknown target foo)"#.into())
        );
        assert_eq!(
            error(parse_compare(r#"val("a" = "b""#)),
            (3, r#"malformed comparison: val("a" = "b"; got val("a")  """#.into())
        );
        assert_eq!(error(parse_compare(r#"val("a") == "b""#)), (2, "Unknown result op".into()));
    }

    #[test]
    fn op_errors_are_etcdctl_texts() {
        assert_eq!(error(parse_op("put")), (3, "invalid txn compare request: put".into()));
        assert_eq!(error(parse_op("foo a b")), (3, "invalid txn request: foo a b".into()));
        assert_eq!(
            error(parse_op("put a")),
            (128, "put command needs 1 argument and input from stdin or 2 arguments".into())
        );
        assert!(parse_op("get t/ --prefix --sort-by=VALUE --order=DESCEND").is_ok());
    }

    #[test]
    fn sections_need_their_newlines() {
        let mut input: &[u8] = b"val(\"a\") = \"b\"\n\n";
        assert_eq!(read_section(&mut input, parse_compare).unwrap().len(), 1);
        let mut input: &[u8] = b"";
        assert_eq!(error(read_section(&mut input, parse_compare)), (3, "EOF".into()));
    }
}
