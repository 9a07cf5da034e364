//! Standard output that a closed pipe ends quietly.

use std::io::{self, BufWriter, Write};

/// Buffered standard output. Write errors are returned, so that a closed
/// pipe (`nerve query ... | head`) ends the command instead of panicking as
/// `println!` would.
pub(crate) struct Out {
    inner: BufWriter<io::Stdout>,
}

impl Out {
    pub(crate) fn stdout() -> Self {
        Self {
            inner: BufWriter::new(io::stdout()),
        }
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, text: impl AsRef<str>) -> io::Result<()> {
        self.inner.write_all(text.as_ref().as_bytes())?;
        self.inner.write_all(b"\n")
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `eprintln!` that a closed standard error cannot turn into a panic:
/// `nerve stats LOG 2>&1 | head` closes both streams while a warning is
/// still to be written, and `eprintln!` would then panic (exit 101).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

/// `e` and its causes, joined by `: ` as `{e:#}` joins them, but without a
/// cause the message before it already ends with: some errors (async-nats's
/// `ConnectError`) put their source in their own message, and the chain
/// would say it twice.
pub(crate) fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.is_empty() {
            text = said;
        } else if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// Whether `e` comes from writing to a pipe whose reader went away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message already holds its source's, as async-nats's
    /// `ConnectError` does.
    #[derive(Debug)]
    struct Says(io::Error);
    impl std::fmt::Display for Says {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "IO error: {}", self.0)
        }
    }
    impl std::error::Error for Says {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_the_message_already_says_is_said_once() {
        let e = anyhow::Error::new(Says(io::Error::other("Connection refused")))
            .context("cannot connect to NATS at `nats://127.0.0.1:1`");
        assert_eq!(
            chain(&e),
            "cannot connect to NATS at `nats://127.0.0.1:1`: IO error: Connection refused"
        );
        let e = anyhow::Error::new(io::Error::other("disk full")).context("cannot write");
        assert_eq!(chain(&e), format!("{e:#}"));
    }
}
