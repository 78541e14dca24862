//! Jepsen's register histories, as its etcd test logs them.

use std::collections::HashMap;

use crate::checker::Operation;
use crate::register::{RegisterInput, RegisterOutput};

/// A register operation with its answer.
pub type RegisterOperation = Operation<RegisterInput, RegisterOutput>;

/// Why a Jepsen history could not be read. Lines are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not `... jepsen.util - <process> :<type> :<f> <value>`.
    #[error("line {line}: not a Jepsen history line: {text:?}")]
    Malformed {
        /// The line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The process is not an unsigned integer.
    #[error("line {line}: bad process {process:?}")]
    BadProcess {
        /// The line number.
        line: usize,
        /// The process as written.
        process: String,
    },
    /// The type is not `:invoke`, `:ok`, `:fail` or `:info`.
    #[error("line {line}: unknown operation type {kind:?}")]
    UnknownType {
        /// The line number.
        line: usize,
        /// The type as written.
        kind: String,
    },
    /// The function is not `:read`, `:write` or `:cas`.
    #[error("line {line}: unknown function {function:?}")]
    UnknownFunction {
        /// The line number.
        line: usize,
        /// The function as written.
        function: String,
    },
    /// The value does not fit the function.
    #[error("line {line}: bad value {value:?} for {function}")]
    BadValue {
        /// The line number.
        line: usize,
        /// The function, e.g. `:cas`.
        function: String,
        /// The value as written.
        value: String,
    },
    /// A process invoked an operation while its previous one was pending.
    #[error("line {line}: process {process} invokes while its operation from line {pending_since} is pending")]
    AlreadyPending {
        /// The line number.
        line: usize,
        /// The process.
        process: u64,
        /// Where the pending operation was invoked.
        pending_since: usize,
    },
    /// A completion with no pending invocation of the same function.
    #[error("line {line}: process {process} completes {function} but has no such operation pending")]
    NoInvocation {
        /// The line number.
        line: usize,
        /// The process.
        process: u64,
        /// The function completed.
        function: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    Read,
    Write,
    Cas,
}

struct Pending {
    line: usize,
    call: u64,
    function: Function,
    input: RegisterInput,
}

/// Parses a Jepsen etcd register history: one event a line,
/// `INFO  jepsen.util - <process> :<invoke|ok|fail|info> :<read|write|cas> <value>`,
/// fields separated by any whitespace; blank lines are skipped.
///
/// Times are line numbers; operations come out in invocation order. The
/// meaning of each completion, as Jepsen's:
/// - `:ok`: the operation took effect with the answer logged (a read's
///   value, `nil` or an integer).
/// - `:fail :cas`: a definite refusal because the value differed.
/// - `:fail` of a read or write: it did not happen, so it is left out.
/// - `:info` of a write or cas, or an invocation never completed: unknown
///   outcome. Reads with unknown outcome had no effect and are left out.
pub fn parse_register_history(text: &str) -> Result<Vec<RegisterOperation>, ParseError> {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut ops: Vec<RegisterOperation> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let tokens: Vec<&str> = raw.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let malformed = || ParseError::Malformed { line, text: raw.to_owned() };
        let start = tokens.windows(2).position(|w| w == ["jepsen.util", "-"]).ok_or_else(malformed)? + 2;
        let [process, kind, function, value @ ..] = &tokens[start..] else { return Err(malformed()) };
        let value = value.join(" ");
        let process: u64 =
            process.parse().map_err(|_| ParseError::BadProcess { line, process: (*process).to_owned() })?;
        let function_name = *function;
        let function = match function_name {
            ":read" => Function::Read,
            ":write" => Function::Write,
            ":cas" => Function::Cas,
            _ => return Err(ParseError::UnknownFunction { line, function: function_name.to_owned() }),
        };
        let bad_value = || ParseError::BadValue { line, function: function_name.to_owned(), value: value.clone() };
        let time = index as u64;
        match *kind {
            ":invoke" => {
                let input = match function {
                    Function::Read => RegisterInput::Read,
                    Function::Write => RegisterInput::Write(parse_int(&value).ok_or_else(bad_value)?),
                    Function::Cas => {
                        let (expected, new) = parse_pair(&value).ok_or_else(bad_value)?;
                        RegisterInput::Cas { expected, new }
                    }
                };
                if let Some(p) = pending.get(&process) {
                    return Err(ParseError::AlreadyPending { line, process, pending_since: p.line });
                }
                pending.insert(process, Pending { line, call: time, function, input });
            }
            ":ok" | ":fail" | ":info" => {
                let invocation = match pending.remove(&process) {
                    Some(p) if p.function == function => p,
                    _ => return Err(ParseError::NoInvocation { line, process, function: function_name.to_owned() }),
                };
                let call = invocation.call;
                let input = invocation.input;
                let op = match (*kind, function) {
                    (":ok", Function::Read) => {
                        let read = parse_nil_or_int(&value).ok_or_else(bad_value)?;
                        Some(Operation::returned(process, call, input, time, RegisterOutput::Read(read)))
                    }
                    (":ok", Function::Write) => {
                        Some(Operation::returned(process, call, input, time, RegisterOutput::Written))
                    }
                    (":ok", Function::Cas) => {
                        Some(Operation::returned(process, call, input, time, RegisterOutput::Cas(true)))
                    }
                    (":fail", Function::Cas) => {
                        Some(Operation::returned(process, call, input, time, RegisterOutput::Cas(false)))
                    }
                    (":info", Function::Write | Function::Cas) => Some(Operation::unknown(process, call, input)),
                    _ => None,
                };
                ops.extend(op);
            }
            _ => return Err(ParseError::UnknownType { line, kind: (*kind).to_owned() }),
        }
    }
    for (process, p) in pending {
        if p.function != Function::Read {
            ops.push(Operation::unknown(process, p.call, p.input));
        }
    }
    ops.sort_by_key(|op| op.call);
    Ok(ops)
}

fn parse_int(s: &str) -> Option<i64> {
    s.parse().ok()
}

fn parse_nil_or_int(s: &str) -> Option<Option<i64>> {
    if s == "nil" {
        Some(None)
    } else {
        parse_int(s).map(Some)
    }
}

fn parse_pair(s: &str) -> Option<(i64, i64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let mut parts = inner.split_whitespace();
    let pair = (parse_int(parts.next()?)?, parse_int(parts.next()?)?);
    parts.next().is_none().then_some(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_event() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:write\t3\n\
                   INFO  jepsen.util - 1   :invoke :cas    [3 4]\n\
                   INFO  jepsen.util - 2\t:invoke\t:read\tnil\n\
                   INFO  jepsen.util - 0\t:ok\t:write\t3\n\
                   INFO  jepsen.util - 2\t:ok\t:read\tnil\n\
                   INFO  jepsen.util - 1\t:info\t:cas\t:timed-out\n\
                   \n\
                   INFO  jepsen.util - 3\t:invoke\t:read\tnil\n\
                   INFO  jepsen.util - 3\t:fail\t:read\t:timed-out\n\
                   INFO  jepsen.util - 4\t:invoke\t:cas\t[1 2]\n\
                   INFO  jepsen.util - 4\t:fail\t:cas\t[1 2]\n\
                   INFO  jepsen.util - 5\t:invoke\t:write\t1\n";
        let ops = parse_register_history(log).expect("valid log");
        assert_eq!(
            ops,
            vec![
                Operation::returned(0, 0, RegisterInput::Write(3), 3, RegisterOutput::Written),
                Operation::unknown(1, 1, RegisterInput::Cas { expected: 3, new: 4 }),
                Operation::returned(2, 2, RegisterInput::Read, 4, RegisterOutput::Read(None)),
                Operation::returned(4, 9, RegisterInput::Cas { expected: 1, new: 2 }, 10, RegisterOutput::Cas(false)),
                Operation::unknown(5, 11, RegisterInput::Write(1)),
            ]
        );
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(matches!(parse_register_history("hello"), Err(ParseError::Malformed { line: 1, .. })));
        assert!(matches!(
            parse_register_history("INFO  jepsen.util - 0 :invoke :cas [1]"),
            Err(ParseError::BadValue { line: 1, .. })
        ));
        assert!(matches!(
            parse_register_history("INFO  jepsen.util - 0 :ok :read 1"),
            Err(ParseError::NoInvocation { line: 1, process: 0, .. })
        ));
        assert!(matches!(
            parse_register_history("INFO  jepsen.util - 0 :invoke :read nil\nINFO  jepsen.util - 0 :invoke :read nil"),
            Err(ParseError::AlreadyPending { line: 2, process: 0, pending_since: 1 })
        ));
        assert!(matches!(
            parse_register_history("INFO  jepsen.util - 0 :invoke :append 1"),
            Err(ParseError::UnknownFunction { line: 1, .. })
        ));
        assert!(matches!(
            parse_register_history("INFO  jepsen.util - 0 :start :read nil"),
            Err(ParseError::UnknownType { line: 1, .. })
        ));
    }
}
