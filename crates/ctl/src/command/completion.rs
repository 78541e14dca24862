//! `completion bash|fish|powershell|zsh`, and the hidden `__complete`
//! command the scripts it prints call.
//!
//! Why a `__complete` entry point rather than static scripts generated
//! from the tables: the scripts hold no command, subcommand or flag name,
//! so a completion installed once (`keelctl completion bash >
//! /etc/bash_completion.d/keelctl`) keeps up with every later keelctl, and
//! the completing logic is written once, in Rust, for all four shells,
//! where unit tests reach it; each script only turns the shell's words into
//! a `keelctl __complete <words> <word being completed>` call and its
//! answer into the shell's candidates. It is cobra's protocol, as
//! etcdctl's own scripts use it: one candidate a line, `name<TAB>description`,
//! then `:<directive>` (cobra's `ShellCompDirective` bits). The candidates
//! come from [`COMMANDS`](super::COMMANDS), each group's and command's
//! flags and the global ones, found the way `run` finds the command a line
//! names (prefix matching included), so a command added there completes
//! with no more work.
//!
//! Where keelctl's answers differ from etcdctl's `__complete`: only the
//! commands keelctl implements are offered; a command's arguments offer no
//! file names unless its use line names a `<filename>`; flags whose values
//! are a fixed set (`--write-out`, `--consistency`, `--order`,
//! `--sort-by`, booleans after `=`) complete those values, and number and
//! duration flags offer no file names.

use std::io::Write;

use super::{find_next, lookup, Command, Entry, Group, COMMANDS, ETCDCTL_COMMANDS, HELP};
use crate::error::Failure;
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::{Context, GLOBAL_FLAGS};

pub const COMPLETION: Group = Group {
    name: "completion",
    short: "Generate the autocompletion script for the specified shell",
    usage: "completion",
    long: "Generate the autocompletion script for keelctl for the specified shell.
See each sub-command's help for details on how to use the generated script.
",
    flags: &[],
    subcommands: &[&BASH, &FISH, &POWERSHELL, &ZSH],
};

const NO_DESCRIPTIONS: FlagSpec =
    FlagSpec::new("no-descriptions", Kind::Bool, "false", "disable completion descriptions");

// The help texts are cobra's (etcdctl 3.4.23's `completion <shell> --help`)
// with keelctl in the commands to run. The bash script needs no
// bash-completion package, so cobra's paragraph saying it does is left out.
const BASH: Command = Command {
    name: "bash",
    short: "Generate the autocompletion script for bash",
    usage: "bash",
    long: "Generate the autocompletion script for the bash shell.

To load completions in your current shell session:

\tsource <(keelctl completion bash)

To load completions for every new session, execute once:

#### Linux:

\tkeelctl completion bash > /etc/bash_completion.d/keelctl

#### macOS:

\tkeelctl completion bash > $(brew --prefix)/etc/bash_completion.d/keelctl

You will need to start a new shell for this setup to take effect.
",
    flags: &[NO_DESCRIPTIONS],
    run: bash,
};

const FISH: Command = Command {
    name: "fish",
    short: "Generate the autocompletion script for fish",
    usage: "fish",
    long: "Generate the autocompletion script for the fish shell.

To load completions in your current shell session:

\tkeelctl completion fish | source

To load completions for every new session, execute once:

\tkeelctl completion fish > ~/.config/fish/completions/keelctl.fish

You will need to start a new shell for this setup to take effect.
",
    flags: &[NO_DESCRIPTIONS],
    run: fish,
};

const POWERSHELL: Command = Command {
    name: "powershell",
    short: "Generate the autocompletion script for powershell",
    usage: "powershell",
    long: "Generate the autocompletion script for powershell.

To load completions in your current shell session:

\tkeelctl completion powershell | Out-String | Invoke-Expression

To load completions for every new session, add the output of the above command
to your powershell profile.
",
    flags: &[NO_DESCRIPTIONS],
    run: powershell,
};

const ZSH: Command = Command {
    name: "zsh",
    short: "Generate the autocompletion script for zsh",
    usage: "zsh",
    long: "Generate the autocompletion script for the zsh shell.

If shell completion is not already enabled in your environment you will need
to enable it.  You can execute the following once:

\techo \"autoload -U compinit; compinit\" >> ~/.zshrc

To load completions in your current shell session:

\tsource <(keelctl completion zsh); compdef _keelctl keelctl

To load completions for every new session, execute once:

#### Linux:

\tkeelctl completion zsh > \"${fpath[1]}/_keelctl\"

#### macOS:

\tkeelctl completion zsh > $(brew --prefix)/share/zsh/site-functions/_keelctl

You will need to start a new shell for this setup to take effect.
",
    flags: &[NO_DESCRIPTIONS],
    run: zsh,
};

/// cobra's `DisableFlagsInUseLine`, which its `completion bash` alone sets:
/// `etcdctl completion bash` has no `[flags]` in its use line.
pub fn flags_in_use_line(cmd: &Command, parent: Option<&Group>) -> bool {
    !(parent.is_some_and(|g| g.name == COMPLETION.name) && cmd.name == BASH.name)
}

fn bash(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    print_script(ctx, args, &BASH, BASH_SCRIPT)
}

fn fish(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    print_script(ctx, args, &FISH, FISH_SCRIPT)
}

fn powershell(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    print_script(ctx, args, &POWERSHELL, POWERSHELL_SCRIPT)
}

fn zsh(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    print_script(ctx, args, &ZSH, ZSH_SCRIPT)
}

fn print_script(ctx: &mut Context<'_>, args: &[String], cmd: &Command, script: &str) -> Result<(), Failure> {
    if let Some(arg) = args.first() {
        // cobra's `NoArgs`.
        let message =
            format!("unknown command {} for \"etcdctl completion {}\"", crate::gostr::quote(arg.as_bytes()), cmd.name);
        return Err(Failure::Args { message, usage: crate::command_usage(cmd, Some(&COMPLETION)) });
    }
    let entry = if ctx.flags.bool(NO_DESCRIPTIONS.name) { COMPLETE_NO_DESC } else { COMPLETE };
    let _ = ctx.io.stdout.write_all(script.replace("__COMPLETE__", entry).as_bytes());
    Ok(())
}

/// The hidden commands the scripts call: cobra's names, so the scripts
/// would work with etcdctl's too.
const COMPLETE: &str = "__complete";
const COMPLETE_NO_DESC: &str = "__completeNoDesc";

/// Answers `keelctl __complete <words>` (or `__completeNoDesc`): the
/// candidates for the last word, given the ones before it. `None` when
/// `args` is an ordinary command line.
pub fn hidden_entry(args: &[String], stdout: &mut dyn Write, stderr: &mut dyn Write) -> Option<i32> {
    let descriptions = match args.first().map(String::as_str) {
        Some(COMPLETE) => true,
        Some(COMPLETE_NO_DESC) => false,
        _ => return None,
    };
    let (to_complete, before) = match args[1..].split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    let found = candidates(before, to_complete);
    let mut out = String::new();
    for (name, description) in &found.items {
        let description = description.lines().next().unwrap_or_default();
        if descriptions && !description.is_empty() {
            out.push_str(&format!("{name}\t{description}\n"));
        } else {
            out.push_str(&format!("{name}\n"));
        }
    }
    out.push_str(&format!(":{}\n", found.directive));
    let _ = stdout.write_all(out.as_bytes());
    if let Some(note) = &found.note {
        let _ = writeln!(stderr, "[Debug] [Error] {note}");
    }
    let _ = writeln!(stderr, "Completion ended with directive: {}", directive_names(found.directive));
    Some(0)
}

/// cobra's `ShellCompDirective` bits.
mod directive {
    /// Complete file names when there are no candidates.
    pub const DEFAULT: u32 = 0;
    pub const ERROR: u32 = 1;
    pub const NO_SPACE: u32 = 2;
    pub const NO_FILE_COMP: u32 = 4;
}

fn directive_names(directive: u32) -> String {
    if directive == directive::DEFAULT {
        return "ShellCompDirectiveDefault".to_owned();
    }
    let names = [
        (directive::ERROR, "ShellCompDirectiveError"),
        (directive::NO_SPACE, "ShellCompDirectiveNoSpace"),
        (directive::NO_FILE_COMP, "ShellCompDirectiveNoFileComp"),
    ];
    let set: Vec<&str> = names.iter().filter(|(bit, _)| directive & bit != 0).map(|(_, name)| *name).collect();
    set.join(", ")
}

/// What `__complete` answers.
#[derive(Debug, PartialEq, Eq)]
struct Candidates {
    /// `(candidate, description)`, in the order shells should show them.
    items: Vec<(String, String)>,
    directive: u32,
    /// Why there are none, for stderr (cobra's debug line).
    note: Option<String>,
}

impl Candidates {
    fn new(items: Vec<(String, String)>, directive: u32) -> Candidates {
        Candidates { items, directive, note: None }
    }
}

/// The command the words before the one being completed name: cobra's
/// `Find`, as `run` finds it.
#[derive(Clone, Copy)]
enum Found {
    Root,
    Help,
    Group(&'static Group),
    Leaf(&'static Command, Option<&'static Group>),
}

impl Found {
    /// `(local, inherited)` flags, sorted, as cobra lists them: the help
    /// flag is local to every command, and the global flags are the
    /// root's own.
    fn flags(self) -> (Vec<FlagSpec>, Vec<FlagSpec>) {
        let (local, mut inherited): (&[FlagSpec], Vec<FlagSpec>) = match self {
            Found::Root => (GLOBAL_FLAGS, Vec::new()),
            Found::Help => (&[], GLOBAL_FLAGS.to_vec()),
            Found::Group(group) => (group.flags, GLOBAL_FLAGS.to_vec()),
            Found::Leaf(cmd, parent) => {
                (cmd.flags, parent.map_or(&[][..], |g| g.flags).iter().chain(GLOBAL_FLAGS).copied().collect())
            }
        };
        let mut local: Vec<FlagSpec> = local.iter().copied().chain([HELP]).collect();
        local.sort_by_key(|s| s.name);
        inherited.sort_by_key(|s| s.name);
        (local, inherited)
    }

    /// What its help flag's description names: `help for <this>`.
    fn help_for(self) -> &'static str {
        match self {
            Found::Root => "etcdctl",
            Found::Help => crate::help::HELP_COMMAND.name,
            Found::Group(group) => group.name,
            Found::Leaf(cmd, _) => cmd.name,
        }
    }
}

/// cobra's `Find`: the command `args` name and the arguments left for it;
/// `Err` with cobra's note when the first word names no command keelctl has.
fn find(args: &[String]) -> Result<(Found, Vec<String>), String> {
    let root: Vec<FlagSpec> = GLOBAL_FLAGS.iter().copied().chain([HELP]).collect();
    let words = crate::strip_flags(args, &root);
    let Some(word) = words.first() else { return Ok((Found::Root, args.to_vec())) };
    let rest = crate::without_word(args, word);
    let unknown = || format!("Unable to find a command for arguments: [{}]", words.join(" "));
    // etcdctl's names by prefix, keelctl's own only in full.
    let name = find_next(ETCDCTL_COMMANDS, word).or_else(|| lookup(word).map(|entry| entry.name()));
    let name = name.ok_or_else(unknown)?;
    if name == "help" {
        return Ok((Found::Help, rest));
    }
    match lookup(name).ok_or_else(unknown)? {
        Entry::Leaf(cmd) => Ok((Found::Leaf(cmd, None), rest)),
        Entry::Group(group) => {
            let specs: Vec<FlagSpec> = group.flags.iter().chain(GLOBAL_FLAGS).copied().chain([HELP]).collect();
            let words = crate::strip_flags(&rest, &specs);
            match words.first().and_then(|w| Some((group.find(w)?, w))) {
                Some((cmd, w)) => Ok((Found::Leaf(cmd, Some(group)), crate::without_word(&rest, w))),
                None => Ok((Found::Group(group), rest)),
            }
        }
    }
}

/// cobra's `getCompletions`: the candidates for `to_complete`, the word
/// under the cursor, after the words `args`.
fn candidates(args: &[String], to_complete: &str) -> Candidates {
    let (found, rest) = match find(args) {
        Ok(found) => found,
        Err(note) => return Candidates { items: Vec::new(), directive: directive::DEFAULT, note: Some(note) },
    };
    let (local, inherited) = found.flags();
    let all: Vec<FlagSpec> = inherited.iter().chain(&local).copied().collect();
    let flags_ended = rest.iter().any(|a| a == "--");
    if !flags_ended {
        if let Some((spec, prefix)) = pending_value(&rest, to_complete, &all) {
            return flag_values(spec, prefix);
        }
    }
    let mut parsed = Parsed::new(&all);
    if let Err(error) = parsed.parse(&rest) {
        let note = format!("Error while parsing flags from args {rest:?}: {error}");
        return Candidates { items: Vec::new(), directive: directive::DEFAULT, note: Some(note) };
    }
    if to_complete.starts_with('-') && !flags_ended {
        return flag_names(&inherited, &local, &parsed, to_complete, found.help_for());
    }
    let matching = |items: Vec<(&str, &str)>| -> Vec<(String, String)> {
        items
            .into_iter()
            .filter(|(name, _)| name.starts_with(to_complete))
            .map(|(name, short)| (name.to_owned(), short.to_owned()))
            .collect()
    };
    match found {
        Found::Root | Found::Group(_) if parsed.positional.is_empty() => {
            Candidates::new(matching(subcommands(found)), directive::NO_FILE_COMP)
        }
        // cobra's help completes the command path it is given.
        Found::Help => match find(&parsed.positional) {
            Ok((target @ (Found::Root | Found::Group(_)), _)) => {
                Candidates::new(matching(subcommands(target)), directive::NO_FILE_COMP)
            }
            _ => Candidates::new(Vec::new(), directive::NO_FILE_COMP),
        },
        Found::Leaf(cmd, _) if cmd.usage.contains("<filename>") => Candidates::new(Vec::new(), directive::DEFAULT),
        _ => Candidates::new(Vec::new(), directive::NO_FILE_COMP),
    }
}

/// The subcommands of the root (with cobra's `help`) or of a group.
fn subcommands(found: Found) -> Vec<(&'static str, &'static str)> {
    match found {
        Found::Root => {
            let mut names: Vec<(&str, &str)> = COMMANDS
                .iter()
                .map(|entry| match entry {
                    Entry::Leaf(cmd) => (cmd.name, cmd.short),
                    Entry::Group(group) => (group.name, group.short),
                })
                .chain([(crate::help::HELP_COMMAND.name, crate::help::HELP_COMMAND.short)])
                .collect();
            names.sort();
            names
        }
        Found::Group(group) => group.subcommands.iter().map(|c| (c.name, c.short)).collect(),
        Found::Help | Found::Leaf(..) => Vec::new(),
    }
}

/// The flag whose value `to_complete` is, with the part of the value
/// typed so far: `--write-out=js`, or `js` after `-w`.
fn pending_value<'a>(rest: &[String], to_complete: &'a str, specs: &[FlagSpec]) -> Option<(FlagSpec, &'a str)> {
    let by_name = |arg: &str| -> Option<FlagSpec> {
        if let Some(long) = arg.strip_prefix("--") {
            return specs.iter().find(|s| s.name == long).copied();
        }
        let mut chars = arg.strip_prefix('-')?.chars();
        let (c, None) = (chars.next()?, chars.next()) else { return None };
        specs.iter().find(|s| s.shorthand == Some(c)).copied()
    };
    if to_complete.starts_with('-') {
        let (flag, value) = to_complete.split_once('=')?;
        // An unknown flag: its value is anything, perhaps a file.
        let spec = by_name(flag).unwrap_or(FlagSpec::new("", Kind::String, "", ""));
        return Some((spec, value));
    }
    let previous = rest.last()?;
    let spec = by_name(previous).filter(|s| !s.takes_no_value())?;
    Some((spec, to_complete))
}

/// Flags whose values are a fixed set, by name. Not in the flag tables:
/// etcdctl's (cobra's) flags carry no such list.
const VALUES: &[(&str, &[&str])] = &[
    ("consistency", &["l", "s"]),
    ("order", &["ASCEND", "DESCEND"]),
    ("sort-by", &["CREATE", "KEY", "MODIFY", "VALUE", "VERSION"]),
    ("write-out", &["fields", "json", "protobuf", "simple", "table"]),
];

fn flag_values(spec: FlagSpec, prefix: &str) -> Candidates {
    let fixed = VALUES.iter().find(|(name, _)| *name == spec.name).map(|(_, values)| *values);
    let values: &[&str] = match (fixed, spec.kind) {
        (Some(values), _) => values,
        (None, Kind::Bool) => &["false", "true"],
        (None, Kind::Int64 | Kind::Duration) => &[],
        // A path, an address, a name: let the shell offer file names.
        (None, Kind::String | Kind::StringSlice) => return Candidates::new(Vec::new(), directive::DEFAULT),
    };
    let items = values.iter().filter(|v| v.starts_with(prefix)).map(|v| (v.to_string(), String::new())).collect();
    Candidates::new(items, directive::NO_FILE_COMP)
}

/// cobra's flag name completion: inherited flags, then the command's own,
/// each sorted; `--name` and `-n` forms that start with `to_complete`;
/// flags already given left out, but for lists, which may be repeated.
fn flag_names(
    inherited: &[FlagSpec],
    local: &[FlagSpec],
    parsed: &Parsed,
    to_complete: &str,
    help_for: &str,
) -> Candidates {
    let mut items = Vec::new();
    for spec in inherited.iter().chain(local) {
        if parsed.changed(spec.name) && spec.kind != Kind::StringSlice {
            continue;
        }
        let usage = if *spec == HELP { format!("help for {help_for}") } else { spec.usage.to_owned() };
        let long = format!("--{}", spec.name);
        if long.starts_with(to_complete) {
            items.push((long, usage.clone()));
        }
        if let Some(c) = spec.shorthand {
            let short = format!("-{c}");
            if short.starts_with(to_complete) {
                items.push((short, usage));
            }
        }
    }
    Candidates::new(items, directive::NO_FILE_COMP)
}

/// `__COMPLETE__` stands for the hidden command the script calls.
const BASH_SCRIPT: &str = r#"# bash completion for keelctl                              -*- shell-script -*-
#
# Printed by `keelctl completion bash`. keelctl finds the candidates itself
# (`keelctl __COMPLETE__ <words>`), so this script does not change as
# commands and flags come and go. It needs no bash-completion package.

# Sets `words` to the words of the command line up to the cursor's word, as
# typed: bash splits `--endpoints=host:2379` at the `=` and `:` of
# COMP_WORDBREAKS, and pieces no blank separated in COMP_LINE are joined.
__keelctl_words()
{
    local i word rest line=${COMP_LINE-}
    words=()
    for ((i = 0; i <= COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        rest=${line#"${line%%[![:space:]]*}"}
        if ((i > 0)) && [[ -n $line && $rest == "$line" ]]; then
            words[${#words[@]}-1]+=$word
        else
            words+=("$word")
        fi
        line=${rest#"$word"}
    done
}

__keelctl_complete()
{
    local words=() lines=() line name cur i width directive=0
    local -a descriptions=()
    __keelctl_words
    cur=${words[${#words[@]}-1]}
    # `--flag=value`: keelctl answers values, and bash replaces only what
    # follows the `=`.
    [[ $cur == -*=* ]] && cur=${cur#*=}
    while IFS='' read -r line; do
        lines+=("$line")
    done < <("${words[0]}" __COMPLETE__ "${words[@]:1}" 2>/dev/null)
    if ((${#lines[@]} > 0)) && [[ ${lines[${#lines[@]}-1]} =~ ^:([0-9]+)$ ]]; then
        directive=${BASH_REMATCH[1]}
        unset 'lines[${#lines[@]}-1]'
    fi
    COMPREPLY=()
    ((directive & 1)) && return
    ((directive & 2)) && compopt -o nospace 2>/dev/null
    ((directive & 4)) && compopt +o default 2>/dev/null
    for line in "${lines[@]}"; do
        name=${line%%$'\t'*}
        [[ $name == "$cur"* ]] || continue
        COMPREPLY+=("$name")
        if [[ $line == *$'\t'* ]]; then descriptions+=("${line#*$'\t'}"); else descriptions+=(""); fi
    done
    # Listing the candidates (a second TAB): show each one's description.
    # bash inserts only what all candidates share, and that never reaches
    # into a description: names hold no blanks.
    if ((${#COMPREPLY[@]} > 1)) && [[ ${COMP_TYPE-} == 63 ]]; then
        width=0
        for name in "${COMPREPLY[@]}"; do ((${#name} > width)) && width=${#name}; done
        for i in "${!COMPREPLY[@]}"; do
            line=${descriptions[i]}
            [[ -n $line ]] || continue
            if ((${#line} > ${COLUMNS:-80} - width - 6 && ${COLUMNS:-80} - width - 6 > 8)); then
                line="${line:0:${COLUMNS:-80} - width - 9}..."
            fi
            printf -v line '%-*s  (%s)' "$width" "${COMPREPLY[i]}" "$line"
            COMPREPLY[i]=$line
        done
    fi
}

complete -o default -F __keelctl_complete keelctl
"#;

const ZSH_SCRIPT: &str = r#"#compdef keelctl
compdef _keelctl keelctl

# zsh completion for keelctl, printed by `keelctl completion zsh`. keelctl
# finds the candidates itself (`keelctl __COMPLETE__ <words>`), so this
# script does not change as commands and flags come and go.

_keelctl()
{
    local -a lines candidates nospace
    local line name description directive=0 out
    out=$("${(Q)words[1]}" __COMPLETE__ "${(@Q)words[2,CURRENT]}" 2>/dev/null)
    lines=("${(@f)out}")
    if [[ ${lines[-1]} == :<-> ]]; then
        directive=${lines[-1]#:}
        lines[-1]=()
    fi
    (( directive & 1 )) && return 1
    for line in "${lines[@]}"; do
        [[ -n $line ]] || continue
        name=${line%%$'\t'*}
        description=
        [[ $line == *$'\t'* ]] && description=${line#*$'\t'}
        candidates+=("${name//:/\\:}${description:+:$description}")
    done
    # `--flag=value`: keelctl answers values; match them after the `=`.
    [[ ${words[CURRENT]} == -*=* ]] && compset -P '*='
    if (( ${#candidates} )); then
        (( directive & 2 )) && nospace=(-S '')
        _describe -t keelctl 'keelctl' candidates "${nospace[@]}"
        return
    fi
    (( directive & 4 )) && return 1
    _files
}

# Loaded from fpath, this file is the body of _keelctl: complete now.
# Sourced, it only defines the function.
if [[ $funcstack[1] == _keelctl ]]; then
    _keelctl "$@"
fi
"#;

const FISH_SCRIPT: &str = r#"# fish completion for keelctl, printed by `keelctl completion fish`.
# keelctl finds the candidates itself (`keelctl __COMPLETE__ <words>`), so
# this script does not change as commands and flags come and go.

# Sets __keelctl_results; fails when fish should complete file names instead.
function __keelctl_prepare
    set -g __keelctl_results
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    set -l out ($words[1] __COMPLETE__ $words[2..-1] "$current" 2>/dev/null)
    set -l directive 0
    if string match -qr '^:[0-9]+$' -- "$out[-1]"
        set directive (string sub -s 2 -- $out[-1])
        set -e out[-1]
    end
    if test (math "bitand($directive, 1)") -ne 0
        return 0
    end
    # `--flag=value`: keelctl answers values; fish matches whole words.
    set -l prefix (string match -r -- '^-[^=]*=' "$current")
    for line in $out
        set -a __keelctl_results "$prefix$line"
    end
    if test (count $__keelctl_results) -eq 0; and test (math "bitand($directive, 4)") -eq 0
        return 1
    end
    return 0
end

complete -c keelctl -e
complete -c keelctl -f -n __keelctl_prepare -a '$__keelctl_results'
"#;

const POWERSHELL_SCRIPT: &str = r#"# powershell completion for keelctl, printed by `keelctl completion powershell`.
# keelctl finds the candidates itself (`keelctl __COMPLETE__ <words>`), so
# this script does not change as commands and flags come and go.

Register-ArgumentCompleter -Native -CommandName 'keelctl' -ScriptBlock {
    param($WordToComplete, $CommandAst, $CursorPosition)

    # The words up to the cursor as typed; the one being completed last,
    # empty after a blank.
    $Words = @($CommandAst.CommandElements |
        Where-Object { $_.Extent.StartOffset -lt $CursorPosition } |
        ForEach-Object { $_.Extent.Text })
    if ($WordToComplete -eq '') { $Words += '' }
    $Program = $Words[0]
    $Arguments = @($Words | Select-Object -Skip 1)
    # Before PowerShell 7.3 an empty argument never reaches a native program.
    if ($PSVersionTable.PSVersion -lt [version]'7.3.0' -or $PSNativeCommandArgumentPassing -eq 'Legacy') {
        $Arguments = @($Arguments | ForEach-Object { if ($_ -eq '') { '""' } else { $_ } })
    }
    $Out = @(& $Program __COMPLETE__ @Arguments 2>$null)
    $Directive = 0
    if ($Out.Count -gt 0 -and $Out[-1] -match '^:(\d+)$') {
        $Directive = [int]$Matches[1]
        $Out = @($Out | Select-Object -SkipLast 1)
    }
    if ($Directive -band 1) { return '' }
    # `--flag=value`: keelctl answers values; complete the whole word.
    $Prefix = ''
    if ($WordToComplete -match '^(-[^=]*=)') { $Prefix = $Matches[1] }
    $Results = @(foreach ($Line in $Out) {
        $Name, $Description = $Line -split "`t", 2
        if (-not $Description) { $Description = $Name }
        [System.Management.Automation.CompletionResult]::new($Prefix + $Name, $Name, 'ParameterValue', $Description)
    })
    # Nothing to offer and no file names wanted: an empty answer stops
    # PowerShell from completing paths.
    if ($Results.Count -eq 0 -and ($Directive -band 4)) { return '' }
    $Results
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> Candidates {
        let (last, before) = words.split_last().expect("a word to complete");
        let before: Vec<String> = before.iter().map(|s| s.to_string()).collect();
        candidates(&before, last)
    }

    fn names(words: &[&str]) -> Vec<String> {
        complete(words).items.into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn commands_and_subcommands_come_from_the_tables() {
        let root = complete(&[""]);
        assert_eq!(root.directive, directive::NO_FILE_COMP);
        for entry in COMMANDS {
            assert!(root.items.iter().any(|(name, _)| name == entry.name()), "{} offered", entry.name());
        }
        assert!(root.items.iter().any(|(name, short)| name == "help" && short == "Help about any command"));
        assert_eq!(names(&["l"]), ["lease", "lock"]);
        assert_eq!(names(&["lease", ""]), ["grant", "keep-alive", "list", "revoke", "timetolive"]);
        // Prefix matching finds the group, as `run` does.
        assert_eq!(names(&["leas", "g"]), ["grant"]);
        assert_eq!(names(&["--endpoints", "x:1", "-w", "json", "lo"]), ["lock"]);
        assert_eq!(names(&["completion", ""]), ["bash", "fish", "powershell", "zsh"]);
        assert_eq!(names(&["help", "lease", "k"]), ["keep-alive"]);
        assert!(names(&["help", "lease", "grant", ""]).is_empty());
    }

    #[test]
    fn flags_inherited_first_then_local() {
        let all = complete(&["endpoint", "status", "-"]);
        let first: Vec<&str> = all.items.iter().take(4).map(|(n, _)| n.as_str()).collect();
        assert_eq!(first, ["--cacert", "--cert", "--cluster", "--command-timeout"]);
        let last: Vec<(&str, &str)> = all.items.iter().rev().take(2).map(|(n, d)| (n.as_str(), d.as_str())).collect();
        assert_eq!(last, [("-h", "help for status"), ("--help", "help for status")]);
        assert_eq!(names(&["get", "--pr"]), ["--prefix", "--print-value-only"]);
        // Given flags are left out; lists may be given again.
        assert_eq!(names(&["get", "--prefix", "--p"]), ["--password", "--print-value-only"]);
        assert_eq!(names(&["get", "--endpoints=a", "--end"]), ["--endpoints"]);
        assert_eq!(names(&["get", "-w"]), ["-w"]);
        // After `--`, everything is an argument.
        assert_eq!(complete(&["get", "--", "-"]).items, []);
    }

    #[test]
    fn flag_values() {
        assert_eq!(names(&["get", "-w", ""]), ["fields", "json", "protobuf", "simple", "table"]);
        assert_eq!(names(&["get", "--write-out=j"]), ["json"]);
        assert_eq!(names(&["--consistency", ""]).len(), 0, "a get flag, unknown at the root");
        assert_eq!(names(&["get", "--consistency", ""]), ["l", "s"]);
        assert_eq!(names(&["get", "--prefix=t"]), ["true"]);
        let limit = complete(&["get", "--limit", ""]);
        assert_eq!((limit.items.len(), limit.directive), (0, directive::NO_FILE_COMP));
        let cacert = complete(&["get", "--cacert", ""]);
        assert_eq!((cacert.items.len(), cacert.directive), (0, directive::DEFAULT));
    }

    #[test]
    fn arguments_offer_files_only_where_the_use_line_names_one() {
        assert_eq!(complete(&["get", "foo", ""]).directive, directive::NO_FILE_COMP);
        assert_eq!(complete(&["snapshot", "save", ""]).directive, directive::DEFAULT);
        let unknown = complete(&["nosuch", ""]);
        assert_eq!(unknown.directive, directive::DEFAULT);
        assert_eq!(unknown.note.as_deref(), Some("Unable to find a command for arguments: [nosuch]"));
    }

    #[test]
    fn protocol_output() {
        let run = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = hidden_entry(&args, &mut out, &mut err);
            (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
        };
        let (code, out, err) = run(&["__complete", "lease", "gr"]);
        assert_eq!((code, out.as_str()), (Some(0), "grant\tCreates leases\n:4\n"));
        assert_eq!(err, "Completion ended with directive: ShellCompDirectiveNoFileComp\n");
        assert_eq!(run(&["__completeNoDesc", "lease", "gr"]).1, "grant\n:4\n");
        assert_eq!(run(&["get", "x"]).0, None);
    }

    #[test]
    fn scripts_call_the_hidden_command_they_are_made_for() {
        for script in [BASH_SCRIPT, ZSH_SCRIPT, FISH_SCRIPT, POWERSHELL_SCRIPT] {
            assert!(script.contains("__COMPLETE__"));
        }
        assert!(flags_in_use_line(&ZSH, Some(&COMPLETION)));
        assert!(!flags_in_use_line(&BASH, Some(&COMPLETION)));
    }
}
