//! [`CommandSink`]: alerts as JSON on a program's standard input.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Alert, AlertError, AlertSink, SinkFuture};

/// Runs a program for each alert, with the alert as one line of JSON on its
/// standard input (the [`Alert`] fields). Exit status 0 is a delivery; any
/// other status, or running past the timeout (10 s unless set), is a failure
/// carrying the end of its standard error. The program is killed when its
/// delivery is dropped.
///
/// ```
/// use nerve::consumers::alert::CommandSink;
///
/// let notify = CommandSink::new("/usr/local/bin/page-oncall").arg("--team").arg("extraction");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CommandSink {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
}

impl CommandSink {
    /// Runs `program` (looked up in `PATH` when it has no slash).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How long one run may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(&self, alert: &Alert) -> Result<(), AlertError> {
        let mut line = serde_json::to_vec(alert)
            .map_err(|e| AlertError::permanent(format!("alert not serializable: {e}")))?;
        line.push(b'\n');
        let program = self.program.to_string_lossy().into_owned();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AlertError::new(format!("could not run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading its input is judged by
            // its exit status, not by the broken pipe.
            let _ = stdin.write_all(&line).await;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| AlertError::new(format!("{program} ran past {:?}", self.timeout)))?
            .map_err(|e| AlertError::new(format!("waiting for {program} failed: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(AlertError::new(format!(
            "{program} exited with {}: {tail}",
            output.status
        )))
    }
}

impl AlertSink for CommandSink {
    fn name(&self) -> &str {
        "command"
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> SinkFuture<'a> {
        Box::pin(self.run(alert))
    }
}
