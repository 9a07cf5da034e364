//! Rolling CHANGELOG.md (Keep a Changelog) at a release: the `[Unreleased]`
//! section becomes `[x.y.z] - date` and a fresh, empty `[Unreleased]`
//! section opens above it.

use anyhow::{Result, bail};
use semver::Version;

/// The heading of the standing section.
const UNRELEASED: &str = "## [Unreleased]";

/// Where the `[Unreleased]` section of a changelog is, by line index.
struct Section {
    /// The heading's line.
    heading: usize,
    /// The first line after the section (the next `## ` heading or the end).
    end: usize,
}

/// Finds the `[Unreleased]` section of `lines`.
fn unreleased(lines: &[&str]) -> Result<Section> {
    let Some(heading) = lines.iter().position(|line| line.trim_end() == UNRELEASED) else {
        bail!("CHANGELOG.md has no `{UNRELEASED}` section");
    };
    let end = lines[heading + 1..]
        .iter()
        .position(|line| line.starts_with("## "))
        .map_or(lines.len(), |at| heading + 1 + at);
    Ok(Section { heading, end })
}

/// Whether a line of the section says something: not blank, not a
/// `### Added`-style heading.
fn is_entry(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with("### ")
}

/// Whether the `[Unreleased]` section lists any change.
///
/// # Errors
///
/// When there is no `[Unreleased]` section.
pub(crate) fn has_unreleased_changes(text: &str) -> Result<bool> {
    let lines: Vec<&str> = text.lines().collect();
    let section = unreleased(&lines)?;
    Ok(lines[section.heading + 1..section.end]
        .iter()
        .any(|line| is_entry(line)))
}

/// The changelog with `[Unreleased]` released as `version` on `date`
/// (`YYYY-MM-DD`): a fresh empty `[Unreleased]` section, then the
/// released entries under `## [version] - date`, their empty `###`
/// subsections dropped. Link references at the bottom
/// (`[Unreleased]: .../compare/v0.1.0...HEAD`) are moved on when present.
///
/// # Errors
///
/// When there is no `[Unreleased]` section or it is empty.
pub(crate) fn roll(text: &str, version: &Version, date: &str) -> Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let section = unreleased(&lines)?;
    let body = &lines[section.heading + 1..section.end];
    if !body.iter().any(|line| is_entry(line)) {
        bail!("CHANGELOG.md's `{UNRELEASED}` section lists no change");
    }
    let mut out: Vec<String> = lines[..section.heading]
        .iter()
        .map(|line| (*line).to_owned())
        .collect();
    out.push(UNRELEASED.to_owned());
    out.push(String::new());
    out.push(format!("## [{version}] - {date}"));
    out.extend(drop_empty_subsections(body));
    out.extend(lines[section.end..].iter().map(|line| (*line).to_owned()));
    move_links(&mut out, version);
    let mut text_out = out.join("\n");
    if text.ends_with('\n') {
        text_out.push('\n');
    }
    Ok(text_out)
}

/// The section's lines without `###` headings that have no entry under
/// them, and without runs of blank lines those leave behind.
fn drop_empty_subsections(body: &[&str]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for (index, line) in body.iter().enumerate() {
        if line.trim_start().starts_with("### ") {
            let has_entries = body[index + 1..]
                .iter()
                .take_while(|next| !next.trim_start().starts_with("### "))
                .any(|next| is_entry(next));
            if !has_entries {
                continue;
            }
        }
        let blank = line.trim().is_empty();
        if blank && kept.last().is_some_and(|last| last.trim().is_empty()) {
            continue;
        }
        kept.push((*line).to_owned());
    }
    if kept.first().is_none_or(|first| !first.trim().is_empty()) {
        kept.insert(0, String::new());
    }
    kept
}

/// Moves the `[Unreleased]: <repo>/compare/<tag>...HEAD` link reference on
/// to the new tag and adds `[version]: <repo>/compare/<tag>...v<version>`
/// below it; does nothing when there is no such link.
fn move_links(lines: &mut [String], version: &Version) {
    let Some(index) = lines
        .iter()
        .position(|line| line.starts_with("[Unreleased]: ") && line.ends_with("...HEAD"))
    else {
        return;
    };
    let url = lines[index]["[Unreleased]: ".len()..].to_owned();
    let Some((base, previous)) = url
        .strip_suffix("...HEAD")
        .and_then(|rest| rest.rsplit_once("/compare/"))
    else {
        return;
    };
    lines[index] = format!(
        "[Unreleased]: {base}/compare/v{version}...HEAD\n[{version}]: {base}/compare/{previous}...v{version}"
    );
}

/// Unit tests for the roll.
#[cfg(test)]
mod tests {
    use super::*;

    /// A changelog with `body` as the unreleased section, then 0.1.0.
    fn changelog(body: &str) -> String {
        format!(
            "# Changelog\n\nIntro.\n\n## [Unreleased]\n{body}## [0.1.0] - 2026-01-01\n\n- First.\n"
        )
    }

    /// Headings alone are not changes; any entry is.
    #[test]
    fn tells_an_empty_section() {
        assert!(!has_unreleased_changes(&changelog("\n### Added\n\n### Fixed\n\n")).unwrap());
        assert!(!has_unreleased_changes(&changelog("")).unwrap());
        assert!(has_unreleased_changes(&changelog("\n### Fixed\n\n- A bug.\n\n")).unwrap());
        assert!(has_unreleased_changes("# Changelog\n").is_err());
    }

    /// The section becomes the release, a fresh one opens above, empty
    /// subsections go, the older releases stay as they were.
    #[test]
    fn rolls_unreleased_into_a_release() {
        let text = changelog(
            "\n### Added\n\n- A thing.\n  More of it.\n\n### Changed\n\n### Fixed\n\n- A bug.\n\n",
        );
        let rolled = roll(&text, &Version::new(0, 2, 0), "2026-12-03").unwrap();
        assert_eq!(
            rolled,
            "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-03\n\n### Added\n\n- A thing.\n  More of it.\n\n### Fixed\n\n- A bug.\n\n## [0.1.0] - 2026-01-01\n\n- First.\n"
        );
        // Nothing left to release: a second roll is refused.
        assert!(roll(&rolled, &Version::new(0, 3, 0), "2026-12-04").is_err());
    }

    /// Compare links follow the release when the changelog has them.
    #[test]
    fn moves_compare_links() {
        let text = "## [Unreleased]\n\n- A.\n\n## [0.1.0] - 2026-01-01\n\n[Unreleased]: https://example.com/r/compare/v0.1.0...HEAD\n[0.1.0]: https://example.com/r/releases/tag/v0.1.0\n";
        let rolled = roll(text, &Version::new(0, 2, 0), "2026-12-03").unwrap();
        assert!(rolled.ends_with("[Unreleased]: https://example.com/r/compare/v0.2.0...HEAD\n[0.2.0]: https://example.com/r/compare/v0.1.0...v0.2.0\n[0.1.0]: https://example.com/r/releases/tag/v0.1.0\n"), "{rolled}");
    }
}
