//! Lines a command skipped because they were torn or corrupt: counted, and
//! said on stderr, never silently.

use std::path::Path;
use std::process::ExitCode;

use nerve::journal::ReadError;

use crate::output::say;

/// How many skipped lines a warning names.
const NAMED: usize = 5;

/// The damaged lines one read skipped.
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    pub(crate) torn: u64,
    pub(crate) corrupt: u64,
    /// `file:line` of the first few.
    first: Vec<String>,
}

impl Skipped {
    /// Notes a damaged line (a bad line or a torn tail); returns whether `e`
    /// was one.
    pub(crate) fn note(&mut self, e: &ReadError) -> bool {
        match e {
            ReadError::TornTail { .. } => self.torn += 1,
            ReadError::BadLine { .. } => self.corrupt += 1,
            _ => return false,
        }
        if self.first.len() < NAMED {
            let torn = if matches!(e, ReadError::TornTail { .. }) {
                " (torn)"
            } else {
                ""
            };
            let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
            self.first
                .push(format!("{}{line}{torn}", e.path().display()));
        }
        true
    }

    pub(crate) fn total(&self) -> u64 {
        self.torn + self.corrupt
    }

    /// `3 damaged lines (2 corrupt, 1 torn): e.jsonl:4, ...`, if any.
    pub(crate) fn summary(&self) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let s = if total == 1 { "" } else { "s" };
        let more = total.saturating_sub(self.first.len() as u64);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{total} damaged line{s} ({} corrupt, {} torn): {}{more}",
            self.corrupt,
            self.torn,
            self.first.join(", "),
        ))
    }

    /// The warning, if anything was skipped: how many, where, and what to
    /// run next.
    pub(crate) fn warning(&self, journal: &Path) -> Option<String> {
        self.summary().map(|s| {
            format!(
                "nerve: warning: skipped {s}; run `nerve verify {}` for details",
                journal.display()
            )
        })
    }

    /// Says on stderr what was skipped; the exit code of the read: 1 if
    /// anything was skipped and `strict`, else success.
    pub(crate) fn report(&self, journal: &Path, strict: bool) -> ExitCode {
        match self.warning(journal) {
            Some(w) => {
                say!("{w}");
                if strict {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            None => ExitCode::SUCCESS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_the_first_lines_and_counts_the_rest() {
        let mut s = Skipped::default();
        assert_eq!(s.warning(Path::new("j")), None);
        for line in 1..=7 {
            s.note(&ReadError::BadLine {
                path: PathBuf::from("e.jsonl"),
                line,
                message: String::new(),
            });
        }
        s.note(&ReadError::TornTail {
            path: PathBuf::from("e.jsonl"),
            line: 8,
            bytes: 3,
        });
        let w = s.warning(Path::new("dir")).unwrap();
        assert!(
            w.contains("skipped 8 damaged lines (7 corrupt, 1 torn): e.jsonl:1, e.jsonl:2"),
            "{w}"
        );
        assert!(w.contains("e.jsonl:5 and 3 more"), "{w}");
        assert!(w.contains("nerve verify dir"), "{w}");
    }
}
