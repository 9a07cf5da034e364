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

/// Whether `e` comes from writing to a pipe whose reader went away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
