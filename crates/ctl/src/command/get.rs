//! `get`: a key or a range.

use keel_client::{GetOptions, SortOrder, SortTarget};

use super::{key_bytes, Command};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::printer::Format;

pub const GET: Command = Command {
    name: "get",
    short: "Gets the key or a range of keys",
    usage: "get [options] <key> [range_end]",
    long: "",
    flags: FLAGS,
    run,
};

pub const FLAGS: &[FlagSpec] = &[
    FlagSpec::new("consistency", Kind::String, "l", "Linearizable(l) or Serializable(s)"),
    FlagSpec::new(
        "from-key",
        Kind::Bool,
        "false",
        "Get keys that are greater than or equal to the given key using byte compare",
    ),
    FlagSpec::new("keys-only", Kind::Bool, "false", "Get only the keys"),
    FlagSpec::new("limit", Kind::Int64, "0", "Maximum number of results"),
    FlagSpec::new("order", Kind::String, "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    FlagSpec::new("prefix", Kind::Bool, "false", "Get keys with matching prefix"),
    FlagSpec::new("print-value-only", Kind::Bool, "false", "Only write values when using the \"simple\" output format"),
    FlagSpec::new("rev", Kind::Int64, "0", "Specify the kv revision"),
    FlagSpec::new("sort-by", Kind::String, "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
];

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let (key, options) = get_op(&ctx.flags, args)?;
    let mut printer = ctx.setup()?;
    let response = ctx.call(|client| async move { client.get_with(key, options).await })?;
    if ctx.flags.bool("print-value-only") {
        if printer.format != Format::Simple {
            return Err(Failure::exit(exit::BAD_ARGS, "print-value-only is only for `--write-out=simple`"));
        }
        printer.value_only = true;
    }
    printer.get(ctx.io.stdout, &response)
}

/// etcdctl's `getGetOp`, shared with `txn`; checks in its order.
pub fn get_op(flags: &Parsed, args: &[String]) -> Result<(Vec<u8>, GetOptions), Failure> {
    let bad_args = |message: &str| Failure::exit(exit::BAD_ARGS, message);
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    let Some(first) = args.first() else {
        return Err(bad_args("get command needs one argument as key and an optional argument as range_end"));
    };
    if prefix && from_key {
        return Err(bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one"));
    }
    let mut options = GetOptions::new();
    match flags.string("consistency") {
        "s" => options = options.with_serializable(),
        "l" => {}
        other => {
            return Err(Failure::exit(
                exit::BAD_FEATURE,
                format!("unknown consistency flag {}", crate::gostr::quote(other.as_bytes())),
            ))
        }
    }
    let mut key = key_bytes(first);
    if let Some(end) = args.get(1) {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        options = options.with_range(key_bytes(end));
    }
    options = options.with_limit(flags.int64("limit"));
    if flags.int64("rev") > 0 {
        options = options.with_revision(flags.int64("rev"));
    }
    let raw_order = flags.string("order");
    let order = match raw_order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return Err(Failure::exit(exit::BAD_FEATURE, format!("bad sort order {raw_order}"))),
    };
    let raw_target = flags.string("sort-by");
    let target = match raw_target.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => return Err(Failure::exit(exit::BAD_FEATURE, format!("bad sort target {raw_target}"))),
    };
    // clientv3's WithSort: the server already returns keys in ascending
    // order, so that sort is not requested.
    let order = if target == SortTarget::Key && order == SortOrder::Ascend { SortOrder::None } else { order };
    options = options.with_sort(target, order);
    if prefix {
        if key.is_empty() {
            key = vec![0];
            options = options.with_from_key();
        } else {
            options = options.with_prefix();
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        options = options.with_from_key();
    }
    if flags.bool("keys-only") {
        options = options.with_keys_only();
    }
    Ok((key, options))
}
