//! The keelctl binary where it needs no server: its help for every command,
//! its unknown command and flag errors (compared with the real etcdctl's,
//! when it is installed), and its completion scripts, run in bash, zsh and
//! fish (each when installed). A check that cannot run says so on stderr
//! with `SKIPPED:`; it never passes silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEELCTL: &str = env!("CARGO_BIN_EXE_keelctl");

/// A command's exit code and output.
#[derive(Debug, PartialEq, Eq)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Says on the process's stderr, which libtest does not capture (unlike
/// `eprintln!`), that a check did not run.
fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

/// Where `program` is on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// PATH with keelctl's directory first, so the scripts find `keelctl`.
fn path_with_keelctl() -> String {
    let dir = Path::new(KEELCTL).parent().expect("keelctl's directory");
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// `program` with a scrubbed environment: no `ETCDCTL_*` variable of the
/// caller's reaches it.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", path_with_keelctl()).env("HOME", std::env::temp_dir()).env("ETCDCTL_API", "3");
    cmd
}

fn keelctl(args: &[&str]) -> Ran {
    command(KEELCTL).args(args).output().expect("keelctl runs").into()
}

/// The real etcdctl, or `None` (reported as a skip) when not installed.
fn etcdctl_binary(test: &str) -> Option<PathBuf> {
    let found = which("etcdctl");
    if found.is_none() {
        skipped(&format!("{test}: etcdctl is not installed, nothing to compare with"));
    }
    found
}

fn run(program: &Path, args: &[&str]) -> Ran {
    command(program).args(args).output().expect("runs").into()
}

/// etcdctl's help text as keelctl prints it: the commands that load a
/// completion script name keelctl, and keelctl's bash script needs no
/// bash-completion package.
fn as_keelctl(etcdctl_help: &str) -> String {
    let mut out = String::new();
    let mut in_description = false;
    for line in etcdctl_help.split_inclusive('\n') {
        if line.ends_with(":\n") && !line.starts_with('\t') {
            in_description = line == "DESCRIPTION:\n";
        }
        if in_description && (line.contains("bash-completion") || line.contains("install it via your OS")) {
            continue;
        }
        out.push_str(&if in_description { line.replace("etcdctl", "keelctl") } else { line.to_owned() });
    }
    // The paragraph left out leaves two blank lines in a row.
    out.replace("the bash shell.\n\t\n\t\n", "the bash shell.\n\t\n")
}

#[test]
fn completion_help_matches_etcdctl() {
    let Some(etcdctl) = etcdctl_binary("completion_help_matches_etcdctl") else { return };
    let cases: &[&[&str]] = &[
        &["completion", "--help"],
        &["completion"],
        &["help", "completion"],
        &["completion", "bash", "--help"],
        &["completion", "zsh", "-h"],
        &["help", "completion", "fish"],
        &["completion", "powershell", "--help"],
        &["completion", "bash", "foo"],
        &["completion", "zsh", "--nosuch"],
    ];
    for args in cases {
        let want = run(&etcdctl, args);
        let want = Ran { stdout: as_keelctl(&want.stdout), ..want };
        assert_eq!(keelctl(args), want, "keelctl {args:?}");
    }
}

/// keelctl's commands, from keelctl itself: `(path, top-level name)`,
/// subcommands as `lease grant`.
fn command_paths() -> Vec<Vec<String>> {
    let listed = |words: &[&str]| -> Vec<String> {
        let mut args = vec!["__completeNoDesc"];
        args.extend_from_slice(words);
        args.push("");
        let ran = keelctl(&args);
        assert_eq!(ran.code, 0);
        ran.stdout.lines().filter(|l| !l.starts_with(':')).map(str::to_owned).collect()
    };
    let mut paths = Vec::new();
    for name in listed(&[]) {
        paths.push(vec![name.clone()]);
        // `help`'s arguments are other commands.
        if name == "help" {
            continue;
        }
        for sub in listed(&[&name]) {
            paths.push(vec![name.clone(), sub]);
        }
    }
    paths
}

#[test]
fn every_command_has_help() {
    let paths = command_paths();
    assert!(paths.len() > 50, "{paths:?}");
    for path in &paths {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let flag = keelctl(&[&words[..], &["--help"]].concat());
        assert_eq!((flag.code, flag.stderr.as_str()), (0, ""), "keelctl {words:?} --help");
        let name = if words[0] == "help" { "help".to_owned() } else { words.join(" ") };
        assert!(flag.stdout.starts_with(&format!("NAME:\n\t{name} - ")), "keelctl {words:?} --help:\n{}", flag.stdout);
        for section in ["\nUSAGE:\n\tetcdctl ", "\nOPTIONS:\n"] {
            assert!(flag.stdout.contains(section), "keelctl {words:?} --help has {section:?}");
        }
        if words[0] != "help" {
            let topic = keelctl(&[&["help"], &words[..]].concat());
            assert_eq!(topic, flag, "keelctl help {words:?}");
        }
    }
}

/// Commands whose `--help` and flags are not etcdctl's, and why
/// (docs/compat.md); a path names the command and all below it.
const DIFFERS: &[(&[&str], &str)] = &[
    (&["completion"], "the commands that load a script name keelctl"),
    (&["snapshot", "restore"], "etcdutl 3.5's --bump-revision and --mark-compacted too"),
];

fn differs(path: &[String]) -> bool {
    DIFFERS.iter().any(|(prefix, _)| path.len() >= prefix.len() && prefix.iter().zip(path).all(|(a, b)| a == b))
}

#[test]
fn help_matches_etcdctl_for_every_shared_command() {
    let Some(etcdctl) = etcdctl_binary("help_matches_etcdctl_for_every_shared_command") else { return };
    let etcdctl_has = |words: &[&str]| {
        let listed = run(&etcdctl, &[&["__completeNoDesc"], &words[..words.len() - 1], &[""]].concat());
        listed.stdout.lines().any(|l| l == words[words.len() - 1])
    };
    let mut compared = 0;
    for path in command_paths() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        if differs(&path) || !etcdctl_has(&words) {
            continue;
        }
        let args = [&words[..], &["--help"]].concat();
        assert_eq!(keelctl(&args), run(&etcdctl, &args), "keelctl {words:?} --help");
        compared += 1;
    }
    assert!(compared > 50, "compared {compared}");
}

#[test]
fn unknown_commands_and_flags_fail_as_etcdctl_does() {
    let Some(etcdctl) = etcdctl_binary("unknown_commands_and_flags_fail_as_etcdctl_does") else { return };
    let cases: &[&[&str]] = &[
        &["nosuch"],
        &["gt"],
        &["x", "--endpoints=a"],
        &["--nosuch"],
        &["-x", "get"],
        &["get", "--nosuch"],
        &["get", "-w"],
        &["get", "--limit", "x"],
        &["get", "--prefix=maybe", "k"],
        &["lease", "grant", "--x", "10"],
        &["lease", "--nosuch"],
        &["endpoint", "status", "---x"],
        &["help", "nosuch"],
        &["help", "lease", "nosuch"],
        &["help", "nosuch", "a b", "c`d"],
        &["help", "help"],
        &["help", "--help"],
        &["lease", "nosuch"],
        &[],
    ];
    for args in cases {
        assert_eq!(keelctl(args), run(&etcdctl, args), "keelctl {args:?}");
    }
}

/// `__complete` answers as etcdctl's (cobra's) does, but where
/// completion.rs's module doc says it differs.
#[test]
fn complete_protocol_matches_etcdctl() {
    let Some(etcdctl) = etcdctl_binary("complete_protocol_matches_etcdctl") else { return };
    let mut cases: Vec<Vec<String>> = [
        &["-"][..],
        &["--c"],
        &["--endpoints", "x", "-w", "json", "lea"],
        &["l"],
        &["lease", ""],
        &["leas", "g"],
        &["lease", "-"],
        &["lease", "--h"],
        &["endpoint", "status", "-"],
        &["endpoint", "--c"],
        &["endpoint", "status", "--cluster", "--cl"],
        &["get", "--pr"],
        &["get", "--prefix", "--p"],
        &["get", "--endpoints=a", "--end"],
        &["get", "-w"],
        &["get", "-w", "json", "-"],
        &["get", "--"],
        &["help", "lease", ""],
        &["help", "le"],
        &["completion", ""],
        &["completion", "b"],
        &["completion", "bash", "-"],
    ]
    .iter()
    .map(|words| words.iter().map(|w| w.to_string()).collect())
    .collect();
    // Every shared command's flags, with their descriptions.
    for mut path in command_paths().into_iter().filter(|path| !differs(path)) {
        let listed =
            run(&etcdctl, &[&["__complete"], &path.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
        if listed.stdout.lines().any(|l| l.starts_with(path.last().unwrap().as_str())) {
            path.push("-".to_owned());
            cases.push(path);
        }
    }
    for case in cases {
        for entry in ["__complete", "__completeNoDesc"] {
            let args: Vec<&str> = [entry].into_iter().chain(case.iter().map(String::as_str)).collect();
            assert_eq!(keelctl(&args), run(&etcdctl, &args), "keelctl {args:?}");
        }
    }
}

/// Runs `script` in `shell`, or reports a skip when it is not installed.
fn shell(shell: &str, test: &str, args: &[&str], script: &str) -> Option<Ran> {
    if which(shell).is_none() {
        skipped(&format!("{test}: {shell} is not installed (apt-get install {shell})"));
        return None;
    }
    let mut cmd = command(shell);
    cmd.args(args).arg(script);
    Some(cmd.output().expect("the shell runs").into())
}

/// What bash's completion function answers for `line` (the cursor at
/// its end): COMP_WORDS split as bash splits them, at blanks and at the
/// `=` and `:` of COMP_WORDBREAKS.
fn bash_complete(line: &str, comp_type: u32) -> Option<Vec<String>> {
    let mut words: Vec<String> = Vec::new();
    for blank_separated in line.split(' ') {
        let mut word = String::new();
        for c in blank_separated.chars() {
            if c == '=' || c == ':' {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                words.push(c.to_string());
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() || blank_separated.is_empty() {
            words.push(word);
        }
    }
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <(keelctl completion bash) || exit 9
complete -p keelctl >/dev/null || exit 8
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE={comp_type}
COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
__keelctl_complete
printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" ")
    );
    let ran = shell("bash", "completion_scripts_work_in_bash", &["-c"], &script)?;
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "bash completing {line:?}");
    Some(ran.stdout.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

#[test]
fn completion_scripts_work_in_bash() {
    let cases: &[(&str, &[&str])] = &[
        ("keelctl lea", &["lease"]),
        ("keelctl l", &["lease", "lock"]),
        ("keelctl lease ", &["grant", "keep-alive", "list", "revoke", "timetolive"]),
        ("keelctl --endpoints=127.0.0.1:2379 lease gr", &["grant"]),
        ("keelctl get --pr", &["--prefix", "--print-value-only"]),
        ("keelctl get -w ", &["fields", "json", "protobuf", "simple", "table"]),
        ("keelctl get --write-out=j", &["json"]),
        ("keelctl get --write-out=", &["fields", "json", "protobuf", "simple", "table"]),
        ("keelctl get foo ", &[]),
    ];
    for (line, want) in cases {
        let Some(got) = bash_complete(line, 9) else { return };
        assert_eq!(got, *want, "bash completing {line:?}");
    }
    // Listing (a second TAB) shows descriptions.
    let Some(listed) = bash_complete("keelctl l", 63) else { return };
    assert_eq!(listed, ["lease  (Lease related commands)", "lock   (Acquires a named lock)"]);
}

#[test]
fn completion_scripts_work_in_zsh() {
    let test = "completion_scripts_work_in_zsh";
    let Some(script) = write_script("zsh") else { return };
    let Some(syntax) = shell("zsh", test, &["-n"], &script) else { return };
    assert_eq!((syntax.code, syntax.stderr.as_str()), (0, ""), "zsh -n");
    // compsys is not running: its functions are stubs that print what
    // the script hands them.
    let complete = |words: &str| {
        let body = format!(
            "compdef() {{ print -r -- \"compdef $*\" }}
_describe() {{ print -rl -- \"${{(@P)4}}\" }}
_files() {{ print -r -- FILES }}
compset() {{ : }}
source {script}
words=({words}); CURRENT=${{#words}}
_keelctl"
        );
        let ran = shell("zsh", test, &["-f", "-c"], &body).expect("zsh is installed");
        assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "zsh completing {words}");
        ran.stdout
    };
    assert_eq!(complete("keelctl lea"), "compdef _keelctl keelctl\nlease:Lease related commands\n");
    assert_eq!(complete("keelctl get --write-out=j"), "compdef _keelctl keelctl\njson\n");
    assert_eq!(complete("keelctl snapshot save ''"), "compdef _keelctl keelctl\nFILES\n");
}

#[test]
fn completion_scripts_work_in_fish() {
    let test = "completion_scripts_work_in_fish";
    let Some(script) = write_script("fish") else { return };
    let Some(syntax) = shell("fish", test, &["--no-execute"], &script) else { return };
    assert_eq!((syntax.code, syntax.stderr.as_str()), (0, ""), "fish --no-execute");
    let complete = |line: &str| {
        let body = format!("source {script}; complete -C '{line}'");
        let ran = shell("fish", test, &["--no-config", "-c"], &body).expect("fish is installed");
        assert_eq!(ran.code, 0, "fish completing {line}: {}", ran.stderr);
        ran.stdout
    };
    assert_eq!(complete("keelctl lea"), "lease\tLease related commands\n");
    assert_eq!(complete("keelctl lease gr"), "grant\tCreates leases\n");
    assert_eq!(complete("keelctl get --write-out=j"), "--write-out=json\n");
}

#[test]
fn completion_script_for_powershell() {
    let ran = keelctl(&["completion", "powershell"]);
    assert_eq!(ran.code, 0);
    assert!(ran.stdout.contains("Register-ArgumentCompleter -Native -CommandName 'keelctl'"));
    assert!(ran.stdout.contains("& $Program __complete @Arguments"));
    assert!(keelctl(&["completion", "powershell", "--no-descriptions"]).stdout.contains("__completeNoDesc @Arguments"));
    if which("pwsh").is_none() {
        skipped("completion_script_for_powershell: pwsh is not installed, the script was not run");
    }
}

/// `keelctl completion <shell>` in a file of its own (kept for the test's
/// life: the path is unique to this process).
fn write_script(shell: &str) -> Option<String> {
    let ran = keelctl(&["completion", shell]);
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "keelctl completion {shell}");
    let path = std::env::temp_dir().join(format!("keelctl-completion-{}.{shell}", std::process::id()));
    std::fs::write(&path, ran.stdout).expect("script written");
    Some(path.display().to_string())
}

/// On a terminal, a call that reaches no endpoint gets one line more after
/// etcdctl's two; through a pipe, stderr is etcdctl's alone.
#[test]
fn unreachable_endpoint_is_named_on_a_terminal_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("--endpoints=127.0.0.1:{port}");
    let args = [endpoint.as_str(), "--command-timeout=1s", "get", "k"];
    let piped = keelctl(&args);
    assert_eq!(piped.code, 1);
    let lines: Vec<&str> = piped.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", piped.stderr);
    assert!(lines[0].starts_with("{\"level\":\"warn\""));
    assert_eq!(lines[1], "Error: context deadline exceeded");

    // util-linux's `script` gives keelctl a terminal.
    if which("script").is_none() {
        skipped("unreachable_endpoint_is_named_on_a_terminal_only: no `script` to make a terminal with");
        return;
    }
    let line = format!("{KEELCTL} {}", args.join(" "));
    let ran: Ran = command("script").args(["-qec", &line, "/dev/null"]).output().expect("script runs").into();
    let want =
        format!("Error: context deadline exceeded\r\nkeelctl: cannot reach 127.0.0.1:{port}: connection refused\r\n");
    assert!(ran.stdout.ends_with(&want), "on a terminal:\n{}", ran.stdout);
    assert_eq!(ran.code, 1);
}
