//! `put`: one key, its value from the arguments or stdin.

use std::io::Read;

use keel_client::PutOptions;

use super::{key_bytes, Command};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::gostr;

pub const PUT: Command = Command {
    name: "put",
    short: "Puts the given key into the store",
    usage: "put [options] <key> <value> (<value> can also be given from stdin)",
    long: "
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
",
    flags: FLAGS,
    run,
};

pub const FLAGS: &[FlagSpec] = &[
    FlagSpec::new("ignore-lease", Kind::Bool, "false", "updates the key using its current lease"),
    FlagSpec::new("ignore-value", Kind::Bool, "false", "updates the key using its current value"),
    FlagSpec::new("lease", Kind::String, "0", "lease ID (in hexadecimal) to attach to the key"),
    FlagSpec::new("prev-kv", Kind::Bool, "false", "return the previous key-value pair before modification"),
];

const NEEDS_ARGS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let (key, value, options) = put_op(&ctx.flags, args, Some(&mut *ctx.io.stdin))?;
    let printer = ctx.setup()?;
    let response = ctx.call(|client| async move { client.put_with(key, value, options).await })?;
    printer.put(ctx.io.stdout, &response)
}

/// etcdctl's `getPutOp`, shared with `txn` (which has no stdin left to
/// give: etcdctl's buffered reader already holds it).
pub fn put_op(
    flags: &Parsed,
    args: &[String],
    stdin: Option<&mut dyn Read>,
) -> Result<(Vec<u8>, Vec<u8>, PutOptions), Failure> {
    let bad_args = |message: &str| Failure::exit(exit::BAD_ARGS, message);
    let Some(key) = args.first() else { return Err(bad_args(NEEDS_ARGS)) };
    let ignore_value = flags.bool("ignore-value");
    if ignore_value && args.len() > 1 {
        return Err(bad_args("put command needs only 1 argument when 'ignore-value' is set"));
    }
    let mut value = Vec::new();
    if !ignore_value {
        match (args.get(1), stdin) {
            (Some(arg), _) => value = key_bytes(arg),
            (None, Some(stdin)) => {
                // Read before any runtime exists, so this blocks nothing.
                stdin.read_to_end(&mut value).map_err(|_| bad_args(NEEDS_ARGS))?;
                if value.is_empty() {
                    return Err(bad_args(NEEDS_ARGS));
                }
            }
            (None, None) => return Err(bad_args(NEEDS_ARGS)),
        }
    }
    let lease = gostr::parse_int(flags.string("lease"), 16)
        .map_err(|e| bad_args(&format!("bad lease ID ({e}), expecting ID in Hex")))?;
    let mut options = PutOptions::new();
    if lease != 0 {
        options = options.with_lease(lease);
    }
    if flags.bool("prev-kv") {
        options = options.with_prev_kv();
    }
    if ignore_value {
        options = options.with_ignore_value();
    }
    if flags.bool("ignore-lease") {
        options = options.with_ignore_lease();
    }
    Ok((key_bytes(key), value, options))
}
