//! Pattern-based redaction of one string: one `RegexSet` pass to learn which
//! detectors can match, then only those detectors' own regexes find spans.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::ops::Range;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::detectors::Context;
use super::{Detector, patterns};

/// No detector matches fewer bytes than this (`a@b.co`).
const MIN_LEN: usize = 6;

/// About how long a chunk of text is; see [`chunks`].
const CHUNK_LEN: usize = 128;

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
    /// the address by a dash until the address is a token), and without
    /// another pass redacting the output again would change it. Later passes
    /// scan only the chunks that received a token, so clean text costs one
    /// pass and dirty text little more.
    pub(crate) fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        if text.len() < MIN_LEN || self.finders.is_empty() {
            return (Cow::Borrowed(text), 0);
        }
        let Some(first) = self.pass(text, None) else {
            return (Cow::Borrowed(text), 0);
        };
        let (mut out, mut count, mut tokens) = first;
        for _ in 1..MAX_PASSES {
            let Some((next, more, placed)) = self.pass(&out, Some(&tokens)) else {
                break;
            };
            (out, tokens) = (next, placed);
            count += more;
        }
        (Cow::Owned(out), count)
    }

    /// One pass over `text`, or over the chunks of it that overlap `only`:
    /// the redacted text, the number of findings and where their tokens
    /// are; `None` when nothing was found.
    fn pass(&self, text: &str, only: Option<&[Range<usize>]>) -> Option<Pass> {
        let mut findings = Vec::new();
        let mut vetoes = Vec::new();
        for chunk in chunks(text) {
            if chunk.len() < MIN_LEN
                || only.is_some_and(|only| {
                    !only
                        .iter()
                        .any(|t| t.start < chunk.end && chunk.start < t.end)
                })
            {
                continue;
            }
            // The haystack ends with the chunk but keeps what precedes it,
            // so `\b` and validators see the same context as in `text`.
            let matched = self.set.matches_at(&text[..chunk.end], chunk.start);
            for index in matched.iter() {
                self.finders[index].find(text, chunk.clone(), &mut findings, &mut vetoes);
            }
        }
        // A candidate rejected only by its checksum leaves its text alone:
        // no other detector may redact a piece of it.
        if !vetoes.is_empty() {
            findings.retain(|f| {
                !vetoes.iter().any(|(v, d): &(Range<usize>, Detector)| {
                    *d != f.detector && v.contains(&f.start)
                })
            });
        }
        if findings.is_empty() {
            return None;
        }
        // Earliest first, then longest, then the more specific detector; a
        // finding that overlaps one already taken is dropped.
        findings.sort_unstable_by_key(|f| (f.start, Reverse(f.end), f.detector));
        let mut out = String::with_capacity(text.len());
        let mut tokens = Vec::new();
        let mut last = 0;
        for f in findings {
            if f.start < last {
                continue;
            }
            out.push_str(&text[last..f.start]);
            let at = out.len();
            out.push_str(f.detector.token());
            tokens.push(at..out.len());
            last = f.end;
        }
        out.push_str(&text[last..]);
        let count = tokens.len();
        Some((out, count, tokens))
    }
}

/// A pass's redacted text, number of findings, and token positions.
type Pass = (String, usize, Vec<Range<usize>>);

/// Splits `text` into chunks of about [`CHUNK_LEN`] bytes that no finding
/// can straddle, so that each detector scans only the chunks the
/// `RegexSet` says it may match in, and later passes only the chunks that
/// changed.
///
/// Chunks end after the `,` of a `,"` (the seam between two JSON fields),
/// which no pattern can match: a finding never contains `,"`, and since
/// both characters are non-word characters a chunk's end looks to `\b`
/// exactly like the text that follows it. Text without `,"` is one chunk.
fn chunks(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut seams = text.match_indices(",\"").map(|(i, _)| i + 1);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let end = seams
            .by_ref()
            .find(|&seam| seam - start >= CHUNK_LEN)
            .unwrap_or(text.len());
        let chunk = start..end;
        start = end;
        Some(chunk)
    })
}

impl Finder {
    /// Pushes every accepted candidate in `text`, and the span of every
    /// candidate that [vetoes](Detector::vetoes) other findings. A rejected
    /// candidate is retried one character later, so that a false candidate
    /// cannot hide a true one it overlaps (`12 4111 1111 1111 1111`), except
    /// where the detector knows [a later point](Detector::resume) to resume.
    fn find(
        &self,
        text: &str,
        chunk: Range<usize>,
        out: &mut Vec<Finding>,
        vetoes: &mut Vec<(Range<usize>, Detector)>,
    ) {
        let haystack = &text[..chunk.end];
        let mut locations = None;
        let mut cx = Context::new(chunk.start);
        let mut at = chunk.start;
        while at < chunk.end {
            let Some(whole) = self.regex.find_at(haystack, at) else {
                break;
            };
            // Captures cost more than a search, up to microseconds for a long
            // bearer token: run them only on the match found, and only when
            // the value is not simply the match's tail.
            let span = if !self.grouped {
                whole.range()
            } else if let Some(offset) = self.detector.value_offset(whole.as_str()) {
                whole.start() + offset..whole.end()
            } else {
                let locations = locations.get_or_insert_with(|| self.regex.capture_locations());
                self.regex
                    .captures_read_at(locations, haystack, whole.start())
                    .and_then(|_| locations.get(1))
                    .map_or(whole.range(), |(s, e)| s..e)
            };
            let span = self.detector.extend(haystack, span, &mut cx);
            let end = span.end.max(whole.end());
            let safe = json_safe(text, span.clone());
            let accepted = safe
                .clone()
                .filter(|span| self.detector.accepts(text, span.clone(), &mut cx));
            if let Some(span) = accepted {
                out.push(Finding {
                    start: span.start,
                    end: span.end,
                    detector: self.detector,
                });
                at = end.max(next_char(text, whole.start()));
            } else {
                if let Some(span) = safe.filter(|s| self.detector.vetoes(text, s.clone())) {
                    vetoes.push((span, self.detector));
                }
                at = self.detector.resume(haystack, whole.range());
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
        Scanner::new(Detector::ALL)
            .unwrap()
            .redact(text)
            .0
            .into_owned()
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
    fn chunks_cover_the_text_and_split_only_between_fields() {
        let field = r#""k":"0123456789012345678901234567890123456789","#;
        let text = format!("{{{}\"end\":1}}", field.repeat(10));
        let found: Vec<_> = chunks(&text).collect();
        assert!(found.len() > 1);
        assert_eq!(found[0].start, 0);
        assert_eq!(found.last().unwrap().end, text.len());
        for pair in found.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(pair[0].len() >= CHUNK_LEN);
            assert!(text[..pair[0].end].ends_with(','));
            assert!(text[pair[1].start..].starts_with('"'));
        }
        let whole: Vec<Range<usize>> = chunks("no seams here").collect();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0], 0..13);
        assert_eq!(chunks("").count(), 0);
    }

    #[test]
    fn a_token_that_frees_its_neighbour_is_followed_by_another_pass() {
        // Found by proptest: the phone number is joined to the address by a
        // dash, so it is rejected until the address is a token.
        let scanner = Scanner::new(Detector::ALL).unwrap();
        let (out, count) = scanner.redact("alice@example.com-(415) 555-2671");
        assert_eq!(out, "[REDACTED_EMAIL]-[REDACTED_PHONE]");
        assert_eq!(count, 2);
        assert_eq!(scanner.redact(&out).1, 0);
    }

    #[test]
    fn escapes_at_the_edges_stay_valid_json() {
        assert_eq!(json_safe(r"x\u0041b", 2..8), Some(1..8));
        assert_eq!(json_safe(r#"abc\""#, 0..4), Some(0..3));
        assert_eq!(json_safe(r"abc\\", 0..5), Some(0..5));
        assert_eq!(json_safe("[REDACTED]", 0..10), None);
    }
}
