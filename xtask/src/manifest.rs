//! A deliberately small reader for the parts of Cargo manifests xtask needs.
//!
//! It understands tables, `key = value` lines, comments, quoted keys and
//! values that span lines (arrays, inline tables); that is enough to list
//! features and find `[lints]`, without a TOML dependency.

/// One `key = value` line of a manifest, with the table it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The enclosing table, e.g. `features` or `target.'cfg(unix)'.dependencies`;
    /// empty for keys before the first header.
    pub(crate) table: String,
    /// The key, unquoted.
    pub(crate) key: String,
    /// The value as written, without comments; lines of a multi-line value
    /// are joined with a space.
    pub(crate) value: String,
}

/// Every entry of the manifest, in the order written.
pub(crate) fn entries(manifest: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut table = String::new();
    // Brackets and braces still open from a value that spans lines.
    let mut depth = 0_usize;
    for line in manifest.lines() {
        let (code, delta) = scan(line);
        let code = code.trim();
        if depth > 0 {
            if let Some(entry) = entries.last_mut() {
                entry.value.push(' ');
                entry.value.push_str(code);
            }
        } else if code.starts_with('[') {
            table = code
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        } else if let Some((key, value)) = code.split_once('=') {
            entries.push(Entry {
                table: table.clone(),
                key: unquote(key.trim()).to_owned(),
                value: value.trim().to_owned(),
            });
        }
        depth = depth.saturating_add_signed(delta);
    }
    entries
}

/// Splits off a trailing comment and counts how many brackets and braces the
/// line leaves open, ignoring both inside strings.
fn scan(line: &str) -> (&str, isize) {
    let mut quote = None;
    let mut escaped = false;
    let mut delta = 0;
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(open), c) if c == open && !escaped => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return (&line[..index], delta),
            (None, '[' | '{') => delta += 1,
            (None, ']' | '}') => delta -= 1,
            (None, _) => {}
        }
        escaped = false;
    }
    (line, delta)
}

/// Removes the quotes around a quoted key.
fn unquote(key: &str) -> &str {
    key.trim_matches(|c| c == '"' || c == '\'')
}

/// Unit tests for the manifest reader.
#[cfg(test)]
mod tests {
    use super::*;

    /// The `(table, key)` pairs read from `manifest`.
    fn keys(manifest: &str) -> Vec<(String, String)> {
        entries(manifest)
            .into_iter()
            .map(|entry| (entry.table, entry.key))
            .collect()
    }

    /// Tables, comments, quoted keys and multi-line values.
    #[test]
    fn reads_tables_and_keys() {
        let manifest = r#"
            [package]
            name = "nerve" # the facade
            description = "a [bracket] and a # hash"

            [features]
            ## The default set.
            default = ["journal"]
            full = [
                "journal", # every stable feature
                "dep:serde",
            ]
            "quoted-key" = []

            [[bench]]
            name = "dispatch"
        "#;
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(t, k)| (t.to_string(), k.to_string()))
                .collect()
        };
        assert_eq!(
            keys(manifest),
            pairs(&[
                ("package", "name"),
                ("package", "description"),
                ("features", "default"),
                ("features", "full"),
                ("features", "quoted-key"),
                ("bench", "name"),
            ])
        );
        let full = &entries(manifest)[3];
        assert_eq!(full.value, r#"[ "journal", "dep:serde", ]"#);
    }

    /// Values keep their text, without the comment.
    #[test]
    fn strips_comments_outside_strings() {
        assert_eq!(scan(r#"a = "x # y" # z"#), (r#"a = "x # y" "#, 0));
        assert_eq!(scan(r#"a = ["\"]", "#), (r#"a = ["\"]", "#, 1));
        assert_eq!(scan("]"), ("]", -1));
    }
}
