//! Pattern-based redaction of one string: one `RegexSet` pass to learn which
//! detectors can match, then only those detectors' own regexes find spans.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::ops::Range;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::{Detector, patterns};

/// No detector matches fewer bytes than this (`a@b.co`).
const MIN_LEN: usize = 6;

/// The most passes over one text; see [`Scanner::redact`].
const MAX_PASSES: usize = 4;

/// Room for the lazy DFAs of every pattern at once, so that long texts do not
/// thrash their caches.
const DFA_SIZE_LIMIT: usize = 8 << 20;

/// The compiled patterns of a set of detectors.
#[derive(Debug)]
pub(crate) struct Scanner {
    set: RegexSet,
    finders: Vec<Finder>,
}

#[derive(Debug)]
struct Finder {
    detector: Detector,
    regex: Regex,
    /// The pattern redacts its first capture group rather than the match.
    grouped: bool,
}

#[derive(Debug, Clone, Copy)]
struct Finding {
    start: usize,
    end: usize,
    detector: Detector,
}

impl Scanner {
    /// Compiles the patterns of `detectors`.
    pub(crate) fn new(detectors: &[Detector]) -> Result<Self, regex::Error> {
        let sources: Vec<String> = detectors
            .iter()
            .map(|d| patterns::ascii(d.pattern()))
            .collect();
        let set = RegexSetBuilder::new(&sources)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()?;
        let finders = detectors
            .iter()
            .zip(&sources)
            .map(|(&detector, source)| {
                let regex = RegexBuilder::new(source).build()?;
                let grouped = regex.captures_len() > 1;
                Ok(Finder {
                    detector,
                    regex,
                    grouped,
                })
            })
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self { set, finders })
    }

    /// `text` with every finding replaced by its detector's token, and the
    /// number of replacements. Borrows `text` when nothing was found.
    ///
    /// Redacted text is scanned again until nothing more is found (at most
    /// [`MAX_PASSES`] passes): a token can turn its neighbour into a finding
    /// (in `alice@example.com-(415) 555-2671` the phone number is joined to
    /// the address by a dash until the address is a token), and without the
    /// second pass redacting the output again would change it. Clean text
    /// costs one pass.
    pub(crate) fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        let Some((mut out, mut count)) = self.pass(text) else {
            return (Cow::Borrowed(text), 0);
        };
        for _ in 1..MAX_PASSES {
            let Some((next, more)) = self.pass(&out) else {
                break;
            };
            out = next;
            count += more;
        }
        (Cow::Owned(out), count)
    }

    /// One pass over `text`: `None` when nothing was found.
    fn pass(&self, text: &str) -> Option<(String, usize)> {
        if text.len() < MIN_LEN || self.finders.is_empty() {
            return None;
        }
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return None;
        }
        let mut findings = Vec::new();
        for index in matched.iter() {
            self.finders[index].find(text, &mut findings);
        }
        if findings.is_empty() {
            return None;
        }
        // Earliest first, then longest, then the more specific detector; a
        // finding that overlaps one already taken is dropped.
        findings.sort_unstable_by_key(|f| (f.start, Reverse(f.end), f.detector));
        let mut out = String::with_capacity(text.len());
        let (mut last, mut count) = (0, 0);
        for f in findings {
            if f.start < last {
                continue;
            }
            out.push_str(&text[last..f.start]);
            out.push_str(f.detector.token());
            last = f.end;
            count += 1;
        }
        out.push_str(&text[last..]);
        Some((out, count))
    }
}

impl Finder {
    /// Pushes every accepted candidate in `text`. A rejected candidate is
    /// retried one character later, so that a false candidate cannot hide a
    /// true one it overlaps (`12 4111 1111 1111 1111`).
    fn find(&self, text: &str, out: &mut Vec<Finding>) {
        let mut locations = self.regex.capture_locations();
        let mut at = 0;
        while at < text.len() {
            let Some(whole) = self.regex.captures_read_at(&mut locations, text, at) else {
                break;
            };
            let span = if self.grouped {
                locations.get(1).map_or(whole.range(), |(s, e)| s..e)
            } else {
                whole.range()
            };
            let accepted = json_safe(text, span.clone())
                .filter(|span| self.detector.accepts(text, span.clone()));
            if let Some(span) = accepted {
                out.push(Finding {
                    start: span.start,
                    end: span.end,
                    detector: self.detector,
                });
                at = whole.end().max(next_char(text, whole.start()));
            } else {
                at = next_char(text, whole.start());
            }
        }
    }
}

fn next_char(text: &str, at: usize) -> usize {
    text[at..]
        .chars()
        .next()
        .map_or(text.len(), |c| at + c.len_utf8())
}

/// `span` adjusted so that replacing it keeps JSON text valid, or `None`
/// when there is nothing to replace.
///
/// Tokens need no escaping, so only a span's edges matter: a span that
/// starts on an escaped character takes in the backslash before it (else
/// the backslash would escape the token's `[`), and a span that ends on a
/// lone backslash gives it back (else the character it escaped would lose
/// its escape). A span that already is a token is left alone, which makes
/// redaction idempotent even where a pattern's value class admits `[`.
fn json_safe(text: &str, mut span: Range<usize>) -> Option<Range<usize>> {
    if span.is_empty() || text[span.clone()].starts_with("[REDACTED") {
        return None;
    }
    let bytes = text.as_bytes();
    let escapes_before = bytes[..span.start]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if escapes_before % 2 == 1 {
        span.start -= 1;
    }
    let escapes_at_end = bytes[span.clone()]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if escapes_at_end % 2 == 1 {
        span.end -= 1;
    }
    (!span.is_empty()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Scanner::new(Detector::ALL).unwrap().redact(text).0.into_owned()
    }

    #[test]
    fn clean_text_is_borrowed() {
        let scanner = Scanner::new(Detector::ALL).unwrap();
        let (out, n) = scanner.redact("nothing to see here, version 1.2.3");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
    }

    #[test]
    fn a_rejected_candidate_does_not_hide_a_true_one() {
        assert_eq!(redact("12 4111 1111 1111 1111"), "12 [REDACTED_CARD]");
    }

    #[test]
    fn equal_spans_go_to_the_more_specific_detector() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl";
        assert_eq!(
            redact(&format!("Authorization: Bearer {jwt}")),
            "Authorization: Bearer [REDACTED_JWT]"
        );
        assert_eq!(
            redact("password=alice@example.com"),
            "password=[REDACTED_EMAIL]"
        );
    }

    #[test]
    fn escapes_at_the_edges_stay_valid_json() {
        assert_eq!(json_safe(r"x\u0041b", 2..8), Some(1..8));
        assert_eq!(json_safe(r#"abc\""#, 0..4), Some(0..3));
        assert_eq!(json_safe(r"abc\\", 0..5), Some(0..5));
        assert_eq!(json_safe("[REDACTED]", 0..10), None);
    }
}
