//! etcdctl's help and usage text: its cobra usage template, its flag list
//! format, and Go's `text/tabwriter` (minwidth 0, tabwidth 8, padding 1,
//! tab padding) that aligns both.

use crate::command::Command;
use crate::error::Failure;
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;
use crate::gostr;

/// cobra's `help` command, described for its own help (`etcdctl help
/// help`, `etcdctl help --help`); `run` answers `help` itself.
pub const HELP_COMMAND: Command = Command {
    name: "help",
    short: "Help about any command",
    usage: "help [command]",
    long: "Help provides help for any command in the application.
Simply type etcdctl help [path to command] for full details.",
    flags: &[],
    run: answered_by_dispatch,
};

fn answered_by_dispatch(_ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    Ok(())
}

/// Go's `%#q` of a string: backquoted where `strconv.CanBackquote`
/// allows, else double-quoted.
pub fn go_backquote(s: &str) -> String {
    let can = !s.chars().any(|c| c == '`' || c == '\u{feff}' || (c.is_control() && c != '\t'));
    if can {
        format!("`{s}`")
    } else {
        gostr::quote(s.as_bytes())
    }
}

/// What the usage template needs of one command.
pub struct Usage<'a> {
    /// The name line's `path - short`, e.g. `get` or `etcdctl`.
    pub name: &'a str,
    pub short: &'a str,
    /// cobra's `UseLine`, e.g. `etcdctl get [options] <key> [range_end] [flags]`.
    pub use_line: String,
    /// The root's and command groups' blocks: versions and the listing of
    /// subcommands.
    pub listing: Option<Listing<'a>>,
    pub long: &'a str,
    /// Local flags, without the help flag (added here as cobra adds it).
    pub local: &'a [FlagSpec],
    /// `help for <this>`; empty for no help flag.
    pub help_for: &'a str,
    /// Inherited (global) flags; empty for the root.
    pub inherited: &'a [FlagSpec],
}

/// What etcdctl's template prints for a command with subcommands: the
/// etcdctl version (root only), the API version and the subcommands.
pub struct Listing<'a> {
    /// `None` for a command group: only the root shows `VERSION`.
    pub version: Option<&'a str>,
    pub api_version: &'a str,
    /// `(name relative to this command, short)`, sorted by name.
    pub commands: &'a [(&'a str, &'a str)],
}

impl Usage<'_> {
    pub fn render(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!("NAME:\n\t{} - {}\n\nUSAGE:\n\t{}\n", self.name, self.short, self.use_line));
        if let Some(listing) = &self.listing {
            if let Some(version) = listing.version {
                t.push_str(&format!("\nVERSION:\n\t{version}\n"));
            }
            t.push_str(&format!("\nAPI VERSION:\n\t{}\n", listing.api_version));
            t.push_str("\n\nCOMMANDS:\n");
            for (name, short) in listing.commands {
                t.push_str(&format!("\t{name}\t{short}\n"));
            }
        }
        if !self.long.is_empty() {
            t.push_str("\nDESCRIPTION:\n");
            for line in self.long.trim_matches(|c| c == '\n' || c == '\t' || c == ' ').split('\n') {
                t.push_str(&format!("\t{line}\n"));
            }
        }
        t.push_str("\nOPTIONS:\n");
        t.push_str(&flag_usages(self.local, Some(self.help_for).filter(|name| !name.is_empty())));
        if !self.inherited.is_empty() {
            t.push_str("\nGLOBAL OPTIONS:\n");
            t.push_str(&flag_usages(self.inherited, None));
        }
        t.push('\n');
        tabwrite(&t)
    }
}

/// etcd's `etcdFlagUsages`: one line per flag, sorted by name as pflag's
/// `VisitAll` sorts them.
fn flag_usages(specs: &[FlagSpec], help_for: Option<&str>) -> String {
    let help_usage = help_for.map(|what| format!("help for {what}"));
    let mut lines: Vec<(&str, String)> = specs.iter().map(|spec| (spec.name, flag_line(spec, spec.usage))).collect();
    if let Some(usage) = &help_usage {
        let help = FlagSpec::new("help", Kind::Bool, "false", "").short('h');
        lines.push(("help", flag_line(&help, usage)));
    }
    lines.sort_by(|a, b| a.0.cmp(b.0));
    lines.into_iter().map(|(_, line)| line).collect()
}

fn flag_line(spec: &FlagSpec, usage: &str) -> String {
    let mut line = match spec.shorthand {
        Some(c) => format!("  -{c}, --{}", spec.name),
        None => format!("      --{}", spec.name),
    };
    let default =
        if spec.kind == Kind::String { gostr::quote(spec.default.as_bytes()) } else { spec.default.to_owned() };
    if spec.takes_no_value() {
        line.push_str(&format!("[={default}]"));
    } else {
        line.push_str(&format!("={default}"));
    }
    format!("{line}\t{usage}\n")
}

/// Go's `tabwriter.NewWriter(w, 0, 8, 1, '\t', 0)` over all of `text`.
pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|line| line.split('\t').collect()).collect();
    let mut writer = TabWriter { lines: &lines, out: String::with_capacity(text.len() * 2) };
    writer.format(&mut Vec::new(), 0, lines.len());
    writer.out
}

const TAB_WIDTH: usize = 8;

struct TabWriter<'a> {
    lines: &'a [Vec<&'a str>],
    out: String,
}

impl TabWriter<'_> {
    /// Go's `Writer.format`: a column block is a run of lines that all have
    /// a tab-terminated cell in this column; its width is its widest cell
    /// plus the padding.
    fn format(&mut self, widths: &mut Vec<usize>, mut line0: usize, line1: usize) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(widths, line0, this);
            line0 = this;
            let mut width = 0;
            while this < line1 && column + 1 < self.lines[this].len() {
                width = width.max(self.lines[this][column].chars().count() + 1);
                this += 1;
            }
            widths.push(width);
            self.format(widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(widths, line0, line1);
    }

    fn write_lines(&mut self, widths: &[usize], line0: usize, line1: usize) {
        for i in line0..line1 {
            for (j, cell) in self.lines[i].iter().enumerate() {
                self.out.push_str(cell);
                if let Some(&width) = widths.get(j) {
                    let cell_width = width.div_ceil(TAB_WIDTH) * TAB_WIDTH;
                    let padding = cell_width - cell.chars().count();
                    self.out.extend(std::iter::repeat_n('\t', padding.div_ceil(TAB_WIDTH)));
                }
            }
            if i + 1 < self.lines.len() {
                self.out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_backquote_matches_fmt() {
        // Captured from etcdctl 3.4.23's "Unknown help topic" lines.
        assert_eq!(go_backquote("a b"), "`a b`");
        assert_eq!(go_backquote("a`b"), "\"a`b\"");
    }

    #[test]
    fn tabwriter_aligns_blocks_with_tabs() {
        let text = "OPTIONS:\n      --consistency=\"l\"\tx\n      --print-value-only[=false]\ty\n\nNEXT:\n";
        assert_eq!(
            tabwrite(text),
            "OPTIONS:\n      --consistency=\"l\"\t\t\tx\n      --print-value-only[=false]\ty\n\nNEXT:\n"
        );
        assert_eq!(tabwrite("\tget - Gets\n"), "\tget - Gets\n");
        assert_eq!(
            tabwrite("\tdefrag\tD\n\trole revoke-permission\tR\n"),
            "\tdefrag\t\t\tD\n\trole revoke-permission\tR\n"
        );
    }

    #[test]
    fn compaction_usage_matches_etcdctl() {
        let local = [FlagSpec::new(
            "physical",
            Kind::Bool,
            "false",
            "'true' to wait for compaction to physically remove all old revisions",
        )];
        let usage = Usage {
            name: "compaction",
            short: "Compacts the event history in etcd",
            use_line: "etcdctl compaction [options] <revision> [flags]".into(),
            listing: None,
            long: "",
            local: &local,
            help_for: "compaction",
            inherited: &[FlagSpec::new("hex", Kind::Bool, "false", "print byte strings as hex encoded strings")],
        };
        // Captured from `etcdctl compaction --help` (global options cut to one).
        let expected = "NAME:\n\tcompaction - Compacts the event history in etcd\n\nUSAGE:\n\tetcdctl compaction [options] <revision> [flags]\n\nOPTIONS:\n  -h, --help[=false]\t\thelp for compaction\n      --physical[=false]\t'true' to wait for compaction to physically remove all old revisions\n\nGLOBAL OPTIONS:\n      --hex[=false]\tprint byte strings as hex encoded strings\n\n";
        assert_eq!(usage.render(), expected);
    }
}
