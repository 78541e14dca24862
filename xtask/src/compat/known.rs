//! The intended differences listed in `docs/compat.md`.
//!
//! The section headed "Known differences" holds one entry per line,
//! ``- `<case-id>`: <justification>``, optionally continued on indented lines. Any other
//! bullet in that section is an error, so a typo cannot silently stop an entry from applying.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

const SECTION: &str = "known differences";

/// Case id → justification.
#[derive(Debug, Default)]
pub struct KnownDifferences {
    entries: BTreeMap<String, String>,
}

impl KnownDifferences {
    pub fn justification(&self, id: &str) -> Option<&str> {
        self.entries.get(id).map(String::as_str)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

pub fn parse(markdown: &str) -> Result<KnownDifferences> {
    let mut known = KnownDifferences::default();
    let mut found_section = false;
    let mut in_section = false;
    for (index, line) in markdown.lines().enumerate() {
        let line_no = index + 1;
        if let Some(heading) = line.strip_prefix('#') {
            in_section = heading.trim_start_matches('#').trim().eq_ignore_ascii_case(SECTION);
            found_section |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(entry) = line.strip_prefix("- ") else {
            continue;
        };
        let Some((id, justification)) = parse_entry(entry) else {
            bail!("docs/compat.md:{line_no}: expected \"- `<case-id>`: <justification>\", got {line:?}");
        };
        if known.entries.insert(id.to_owned(), justification.to_owned()).is_some() {
            bail!("docs/compat.md:{line_no}: `{id}` is listed twice");
        }
    }
    if !found_section {
        bail!("docs/compat.md has no \"Known differences\" section");
    }
    Ok(known)
}

fn parse_entry(entry: &str) -> Option<(&str, &str)> {
    let rest = entry.strip_prefix('`')?;
    let (id, rest) = rest.split_once('`')?;
    let justification = rest.strip_prefix(':')?.trim();
    if id.is_empty() || justification.is_empty() {
        return None;
    }
    Some((id, justification))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_of_the_section_only() {
        let md = "\
# Compat
- `not-this`: outside the section

## Known differences

Intro prose.

- `get-prefix-json`: keel reports dbSize differently
  because of reasons continued here.
- `put-plain`: another one

## Something else
- `nor-this`: outside again
";
        let known = parse(md).unwrap();
        assert_eq!(known.ids().collect::<Vec<_>>(), ["get-prefix-json", "put-plain"]);
        assert_eq!(known.justification("get-prefix-json"), Some("keel reports dbSize differently"));
        assert_eq!(known.justification("not-this"), None);
    }

    #[test]
    fn empty_section_is_fine() {
        assert_eq!(parse("## Known differences\n\nNone.\n").unwrap().ids().count(), 0);
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "## Known differences\n- get-prefix: no backticks\n",
            "## Known differences\n- `get-prefix`:\n",
            "## Known differences\n- `get-prefix` missing colon\n",
            "## Known differences\n- `a`: x\n- `a`: y\n",
            "# Elsewhere\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
