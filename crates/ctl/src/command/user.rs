//! `user add|delete|get|list|passwd|grant-role|revoke-role`, and reading a
//! password as etcdctl does (its `speakeasy` prompt, or `fmt.Scanf`).

use std::io::Read;

use prost::Message;

use super::auth::{json_strings, show, Shown};
use super::{Command, Group};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;

pub const USER: Group = Group {
    name: "user",
    short: "User related commands",
    usage: "user <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&ADD, &DELETE, &GET, &GRANT_ROLE, &LIST, &PASSWD, &REVOKE_ROLE],
};

const ADD: Command = Command {
    name: "add",
    short: "Adds a new user",
    usage: "add <user name or user:password> [options]",
    long: "",
    flags: &[
        FlagSpec::new("interactive", Kind::Bool, "true", "Read password from stdin instead of interactive terminal"),
        FlagSpec::new("new-user-password", Kind::String, "", "Supply password from the command line flag"),
        FlagSpec::new("no-password", Kind::Bool, "false", "Create a user without password (CN based auth only)"),
    ],
    run: add,
};

const DELETE: Command =
    Command { name: "delete", short: "Deletes a user", usage: "delete <user name>", long: "", flags: &[], run: delete };

const GET: Command = Command {
    name: "get",
    short: "Gets detailed information of a user",
    usage: "get <user name> [options]",
    long: "",
    flags: &[FlagSpec::new("detail", Kind::Bool, "false", "Show permissions of roles granted to the user")],
    run: get,
};

const LIST: Command =
    Command { name: "list", short: "Lists all users", usage: "list", long: "", flags: &[], run: list };

const PASSWD: Command = Command {
    name: "passwd",
    short: "Changes password of user",
    usage: "passwd <user name> [options]",
    long: "",
    flags: &[FlagSpec::new(
        "interactive",
        Kind::Bool,
        "true",
        "If true, read password from stdin instead of interactive terminal",
    )],
    run: passwd,
};

const GRANT_ROLE: Command = Command {
    name: "grant-role",
    short: "Grants a role to a user",
    usage: "grant-role <user name> <role name>",
    long: "",
    flags: &[],
    run: grant_role,
};

const REVOKE_ROLE: Command = Command {
    name: "revoke-role",
    short: "Revokes a role from a user",
    usage: "revoke-role <user name> <role name>",
    long: "",
    flags: &[],
    run: revoke_role,
};

fn bad_args(message: &str) -> Failure {
    Failure::exit(exit::BAD_ARGS, message)
}

fn add(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [arg] = args else {
        return Err(bad_args("user add command requires user name as its argument"));
    };
    let no_password = ctx.flags.bool("no-password");
    let (user, password) = if no_password {
        (arg.clone(), String::new())
    } else if !ctx.flags.string("new-user-password").is_empty() {
        (arg.clone(), ctx.flags.string("new-user-password").to_owned())
    } else {
        match arg.split_once(':') {
            Some(("", _)) => return Err(bad_args("empty user name is not allowed")),
            Some((user, password)) => (user.to_owned(), password.to_owned()),
            None => (arg.clone(), read_password(ctx, arg)?),
        }
    };
    let printer = ctx.setup()?;
    let name = user.clone();
    let response = ctx.call(|client| async move { client.user_add(name, password, no_password).await })?;
    let shown = Shown::header_only(response.header, format!("User {user} created\n"), response.encode_to_vec());
    show(&printer, ctx.io.stdout, shown)
}

fn delete(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [user] = args else {
        return Err(bad_args("user delete command requires user name as its argument"));
    };
    let printer = ctx.setup()?;
    let name = user.clone();
    let response = ctx.call(|client| async move { client.user_delete(name).await })?;
    let shown = Shown::header_only(response.header, format!("User {user} deleted\n"), response.encode_to_vec());
    show(&printer, ctx.io.stdout, shown)
}

fn get(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [user] = args else {
        return Err(bad_args("user get command requires user name as its argument"));
    };
    let printer = ctx.setup()?;
    let name = user.clone();
    let response = ctx.call(|client| async move { client.user_get(name).await })?;
    if ctx.flags.bool("detail") {
        // etcdctl prints the name itself, then each role as `role get`
        // would, whatever the format.
        let _ = writeln!(ctx.io.stdout, "User: {user}");
        for role in response.roles {
            let _ = writeln!(ctx.io.stdout);
            let name = role.clone();
            let got = ctx.call(|client| async move { client.role_get(name).await })?;
            show(&printer, ctx.io.stdout, super::role::role_get_shown(&role, &got))?;
        }
        return Ok(());
    }
    let mut simple = format!("User: {user}\nRoles:");
    for role in &response.roles {
        simple.push(' ');
        simple.push_str(role);
    }
    simple.push('\n');
    let shown = Shown {
        header: response.header,
        simple: simple.into_bytes(),
        json: json_strings("roles", &response.roles).into_iter().collect(),
        // etcdctl 3.4's fields printer has no UserGet.
        fields: None,
        protobuf: response.encode_to_vec(),
    };
    show(&printer, ctx.io.stdout, shown)
}

fn list(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(bad_args("user list command requires no arguments"));
    }
    let printer = ctx.setup()?;
    let response = ctx.call(|client| async move { client.user_list().await })?;
    let simple: String = response.users.iter().map(|u| format!("{u}\n")).collect();
    let shown = Shown {
        header: response.header,
        simple: simple.into_bytes(),
        json: json_strings("users", &response.users).into_iter().collect(),
        // etcdctl 3.4's fields printer has no UserList.
        fields: None,
        protobuf: response.encode_to_vec(),
    };
    show(&printer, ctx.io.stdout, shown)
}

fn passwd(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [user] = args else {
        return Err(bad_args("user passwd command requires user name as its argument"));
    };
    let password = read_password(ctx, user)?;
    let printer = ctx.setup()?;
    let name = user.clone();
    let response = ctx.call(|client| async move { client.user_change_password(name, password).await })?;
    let shown = Shown::header_only(response.header, "Password updated\n".to_owned(), response.encode_to_vec());
    show(&printer, ctx.io.stdout, shown)
}

fn grant_role(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [user, role] = args else {
        return Err(bad_args("user grant command requires user name and role name as its argument"));
    };
    let printer = ctx.setup()?;
    let (u, r) = (user.clone(), role.clone());
    let response = ctx.call(|client| async move { client.user_grant_role(u, r).await })?;
    let simple = format!("Role {role} is granted to user {user}\n");
    show(&printer, ctx.io.stdout, Shown::header_only(response.header, simple, response.encode_to_vec()))
}

fn revoke_role(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [user, role] = args else {
        return Err(bad_args("user revoke-role requires user name and role name as its argument"));
    };
    let printer = ctx.setup()?;
    let (u, r) = (user.clone(), role.clone());
    let response = ctx.call(|client| async move { client.user_revoke_role(u, r).await })?;
    let simple = format!("Role {role} is revoked from user {user}\n");
    show(&printer, ctx.io.stdout, Shown::header_only(response.header, simple, response.encode_to_vec()))
}

/// The new password of `user`: prompted for twice with `--interactive`
/// (the default), else one word read from stdin as Go's `fmt.Scanf("%s")`.
fn read_password(ctx: &mut Context<'_>, user: &str) -> Result<String, Failure> {
    if !ctx.flags.bool("interactive") {
        return Ok(scan_word(ctx.io.stdin));
    }
    let first = ask(ctx, &format!("Password of {user}: "));
    if first.is_empty() {
        return Err(bad_args("empty password"));
    }
    let second = ask(ctx, &format!("Type password of {user} again for confirmation: "));
    if first != second {
        return Err(bad_args("given passwords are different"));
    }
    Ok(first)
}

/// speakeasy's `Ask`, which etcdctl prompts with: the prompt on stdout,
/// echo turned off around reading one line by running `/bin/stty` on the
/// same stdin (so, with stdin not a terminal, stty's complaints show on
/// stderr as etcdctl's do), then a newline. The answer is trimmed.
pub(crate) fn ask(ctx: &mut Context<'_>, prompt: &str) -> String {
    let _ = ctx.io.stdout.write_all(prompt.as_bytes());
    let _ = ctx.io.stdout.flush();
    stty(ctx, "-echo");
    let line = read_line(ctx.io.stdin);
    stty(ctx, "echo");
    let _ = ctx.io.stdout.write_all(b"\n");
    let _ = ctx.io.stdout.flush();
    String::from_utf8_lossy(&line).trim().to_owned()
}

fn stty(ctx: &mut Context<'_>, setting: &str) {
    // A missing stty only leaves echo on, as with speakeasy.
    let mut stty = std::process::Command::new("/bin/stty");
    // speakeasy names it "stty", which is how stty's complaints begin.
    std::os::unix::process::CommandExt::arg0(&mut stty, "stty");
    let ran = stty
        .arg(setting)
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .output();
    if let Ok(output) = ran {
        let _ = ctx.io.stderr.write_all(&output.stderr);
    }
}

/// One line, read a byte at a time so nothing after it is consumed; the
/// newline (and a `\r` before it) dropped.
fn read_line(input: &mut dyn Read) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = input.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// Go's `fmt.Scanf("%s", &s)` on stdin: spaces before the word skipped,
/// the word ends at a space or newline; a newline first gives "".
fn scan_word(input: &mut dyn Read) -> String {
    let mut word = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = input.read(&mut byte) {
        match byte[0] {
            b' ' | b'\t' | b'\r' if word.is_empty() => continue,
            b' ' | b'\t' | b'\r' | b'\n' => break,
            b => word.push(b),
        }
    }
    String::from_utf8_lossy(&word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanf_reads_one_word() {
        assert_eq!(scan_word(&mut &b"alicepw\n"[..]), "alicepw");
        assert_eq!(scan_word(&mut &b"  a b\nc\n"[..]), "a");
        assert_eq!(scan_word(&mut &b"\nx\n"[..]), "");
        assert_eq!(scan_word(&mut &b""[..]), "");
    }

    #[test]
    fn lines_stop_at_the_newline() {
        let mut input = &b"a b\r\nc\n"[..];
        assert_eq!(read_line(&mut input), b"a b");
        assert_eq!(read_line(&mut input), b"c");
        assert_eq!(read_line(&mut input), b"");
    }
}
