//! `del`: a key or a range.

use keel_client::DeleteOptions;

use super::{key_bytes, Command};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;

pub const DEL: Command = Command {
    name: "del",
    short: "Removes the specified key or range of keys [key, range_end)",
    usage: "del [options] <key> [range_end]",
    long: "",
    flags: FLAGS,
    run,
};

pub const FLAGS: &[FlagSpec] = &[
    FlagSpec::new(
        "from-key",
        Kind::Bool,
        "false",
        "delete keys that are greater than or equal to the given key using byte compare",
    ),
    FlagSpec::new("prefix", Kind::Bool, "false", "delete keys with matching prefix"),
    FlagSpec::new("prev-kv", Kind::Bool, "false", "return deleted key-value pairs"),
];

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let (key, options) = del_op(&ctx.flags, args)?;
    let printer = ctx.setup()?;
    let response = ctx.call(|client| async move { client.delete_with(key, options).await })?;
    printer.del(ctx.io.stdout, &response)
}

/// etcdctl's `getDelOp`, shared with `txn`.
pub fn del_op(flags: &Parsed, args: &[String]) -> Result<(Vec<u8>, DeleteOptions), Failure> {
    let bad_args = |message: &str| Failure::exit(exit::BAD_ARGS, message);
    if args.is_empty() || args.len() > 2 {
        return Err(bad_args("del command needs one argument as key and an optional argument as range_end"));
    }
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    if prefix && from_key {
        return Err(bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one"));
    }
    let mut options = DeleteOptions::new();
    let mut key = key_bytes(&args[0]);
    if let Some(end) = args.get(1) {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        options = options.with_range(key_bytes(end));
    }
    if prefix {
        if key.is_empty() {
            key = vec![0];
            options = options.with_from_key();
        } else {
            options = options.with_prefix();
        }
    }
    if flags.bool("prev-kv") {
        options = options.with_prev_kv();
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        options = options.with_from_key();
    }
    Ok((key, options))
}
