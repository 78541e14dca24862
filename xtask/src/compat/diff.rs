//! Line diff of two normalised outcomes, rendered for a human.

use super::normalise::Normalised;

/// `None` when equal; otherwise a readable diff of exit status, stdout and stderr, with
/// `-` lines from `expected` (the reference) and `+` lines from `actual`.
pub fn render(expected_label: &str, expected: &Normalised, actual_label: &str, actual: &Normalised) -> Option<String> {
    if expected == actual {
        return None;
    }
    let mut out = format!("    --- {expected_label}\n    +++ {actual_label}\n");
    if expected.exit != actual.exit {
        out.push_str("    @@ exit status @@\n");
        out.push_str(&format!("    -{}\n    +{}\n", expected.exit, actual.exit));
    }
    for (name, a, b) in [("stdout", &expected.stdout, &actual.stdout), ("stderr", &expected.stderr, &actual.stderr)] {
        if a != b {
            out.push_str(&format!("    @@ {name} @@\n"));
            let lines = diff_lines(a, b);
            for line in &lines {
                let (sign, text) = match line {
                    Line::Same(t) => (' ', t),
                    Line::Removed(t) => ('-', t),
                    Line::Added(t) => ('+', t),
                };
                out.push_str(&format!("    {sign}{text}\n"));
            }
            for (removed, added) in changed_pairs(&lines) {
                if let Some(hint) = first_difference(removed, added) {
                    out.push_str(&format!("    ~ {hint}\n"));
                }
            }
            if !a.is_empty() && !b.is_empty() && a.ends_with('\n') != b.ends_with('\n') {
                out.push_str("    \\ final newline differs\n");
            }
        }
    }
    Some(out)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// A full-context line diff (longest common subsequence); etcdctl outputs are short.
pub fn diff_lines<'a>(a: &'a str, b: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

/// Pairs the i-th removed line of each change with its i-th added line.
fn changed_pairs<'a>(lines: &[Line<'a>]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let removed: Vec<&str> = lines[i..]
            .iter()
            .map_while(|l| match l {
                Line::Removed(t) => Some(*t),
                _ => None,
            })
            .collect();
        let added: Vec<&str> = lines[i + removed.len()..]
            .iter()
            .map_while(|l| match l {
                Line::Added(t) => Some(*t),
                _ => None,
            })
            .collect();
        pairs.extend(removed.iter().copied().zip(added.iter().copied()));
        i += (removed.len() + added.len()).max(1);
    }
    pairs
}

/// For long lines (one-line json), where they first differ, with a little context.
fn first_difference(a: &str, b: &str) -> Option<String> {
    const LONG: usize = 100;
    const CONTEXT: usize = 30;
    if a.chars().count() < LONG && b.chars().count() < LONG {
        return None;
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let at = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let excerpt = |s: &[char]| -> String {
        let start = at.saturating_sub(CONTEXT);
        let end = (at + CONTEXT).min(s.len());
        let prefix = if start > 0 { "…" } else { "" };
        let suffix = if end < s.len() { "…" } else { "" };
        format!("{prefix}{}{suffix}", s[start..end].iter().collect::<String>())
    };
    Some(format!("first difference at column {}: -{} +{}", at + 1, excerpt(&a), excerpt(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(exit: &str, stdout: &str, stderr: &str) -> Normalised {
        Normalised { exit: exit.to_owned(), stdout: stdout.to_owned(), stderr: stderr.to_owned() }
    }

    #[test]
    fn equal_outcomes_have_no_diff() {
        let a = n("exit 0", "OK\n", "");
        assert_eq!(render("etcd", &a, "keel", &a.clone()), None);
    }

    #[test]
    fn diff_lines_keeps_common_lines() {
        use Line::*;
        assert_eq!(
            diff_lines("a\nb\nc\n", "a\nx\nc\nd\n"),
            vec![Same("a"), Removed("b"), Added("x"), Same("c"), Added("d")]
        );
        assert_eq!(diff_lines("", "a\n"), vec![Added("a")]);
        assert_eq!(diff_lines("a\n", ""), vec![Removed("a")]);
    }

    #[test]
    fn render_shows_only_differing_sections() {
        let etcd = n("exit 1", "", "Error: etcdserver: key not found\n");
        let keel = n("exit 0", "", "Error: etcdserver: key is not found\n");
        let text = render("etcd", &etcd, "keel", &keel).expect("they differ");
        assert_eq!(
            text,
            "    --- etcd\n    +++ keel\n    @@ exit status @@\n    -exit 1\n    +exit 0\n    @@ stderr @@\n    -Error: etcdserver: key not found\n    +Error: etcdserver: key is not found\n"
        );
    }

    #[test]
    fn long_changed_lines_point_at_the_first_difference() {
        let pad = "x".repeat(100);
        let etcd = n("exit 0", &format!("{pad}\"revision\":62,\"raft_term\":2}}\n"), "");
        let keel = n("exit 0", &format!("{pad}\"revision\":60,\"raft_term\":2}}\n"), "");
        let text = render("etcd", &etcd, "keel", &keel).expect("they differ");
        let hint = text.lines().find(|l| l.contains('~')).expect("a hint line");
        let x18 = "x".repeat(18);
        assert_eq!(
            hint,
            format!("    ~ first difference at column 113: -…{x18}\"revision\":62,\"raft_term\":2}} +…{x18}\"revision\":60,\"raft_term\":2}}")
        );
    }

    #[test]
    fn render_flags_a_missing_final_newline() {
        let text = render("etcd", &n("exit 0", "OK\n", ""), "keel", &n("exit 0", "OK", "")).expect("they differ");
        assert!(text.contains("final newline differs"), "{text}");
    }
}
