//! `nerve tail --nats URL PATTERN`: follow the live events that bridges
//! publish to a NATS server, printed as `nerve tail -f` prints a journal's:
//! one event per line, the same JSON.
//!
//! The message body is the event's journal line (see `nerve::nats`), so an
//! event reads back exactly as from the journal of the bus that emitted
//! it. Nothing is dropped silently: a message that is not an event (a body
//! that does not decode, a subject that is no event type or names another
//! type than its body) is counted and named on stderr (`--strict`: exit 1
//! at the first), and so are losses and recoveries of the connection,
//! while which events published meanwhile were missed (core NATS keeps
//! nothing for an absent subscriber).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use nerve::Pattern;
use nerve::nats::subject::{self, Prefix};

use crate::TailArgs;
use crate::inspect::quote;
use crate::output::{Out, say};

/// How long connecting may take before the URL is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that the NATS server at `url` answers, before a command makes
/// anything that a failed connection would leave behind (`nerve demo
/// --nats` a run's journal, `nerve record` its directory): one connection,
/// closed again.
pub(crate) fn reachable(url: &str) -> Result<()> {
    check(url, None)
}

/// [`reachable`], and the server has the JetStream stream `stream`:
/// checked before `nerve record` makes its journal, so that a mistyped name
/// leaves nothing behind.
pub(crate) fn reachable_with_stream(url: &str, stream: &str) -> Result<()> {
    check(url, Some(stream))
}

fn check(url: &str, stream: Option<&str>) -> Result<()> {
    let servers = nerve::nats::servers(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(servers)
            .await
            .with_context(|| format!("cannot connect to NATS at {}", quote(url)))?;
        let Some(name) = stream else {
            return Ok(());
        };
        use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind};
        match jetstream::new(client).get_stream(name).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(anyhow::anyhow!(
                        "cannot record the stream {name:?}: {}",
                        nerve::nats::BridgeError::StreamNotFound(name.to_owned())
                    ))
                }
                _ => Err(anyhow::anyhow!(
                    "cannot record the stream {name:?}: the server at {} could not look it up: {e}",
                    quote(url)
                )),
            },
        }
    })
}

/// Runs `nerve tail --nats URL PATTERN` until interrupted.
pub(crate) fn tail(url: &str, args: &TailArgs, out: &mut Out) -> Result<ExitCode> {
    let text = args.path.to_string_lossy();
    let pattern = Pattern::parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid pattern: {}", quote(&text), e.reason()))?;
    let prefix = Prefix::new(&args.prefix)
        .map_err(|e| anyhow::anyhow!("--prefix {}: {}", quote(&args.prefix), e.reason()))?;
    let filter = subject::pattern_subject(&prefix, &pattern).map_err(|e| {
        anyhow::anyhow!(
            "{} has no NATS subject: {} (see the mapping table in nerve::nats::subject)",
            quote(&text),
            e.reason()
        )
    })?;
    let only = args
        .event_type
        .as_deref()
        .map(|t| {
            Pattern::parse(t)
                .map_err(|e| anyhow::anyhow!("{} is not a valid pattern: {}", quote(t), e.reason()))
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(follow(
        url,
        &prefix,
        &filter,
        only.as_ref(),
        args.strict.strict,
        out,
    ))
}

async fn follow(
    url: &str,
    prefix: &Prefix,
    filter: &str,
    only: Option<&Pattern>,
    strict: bool,
    out: &mut Out,
) -> Result<ExitCode> {
    // async-nats also says `Connected` for the first connection: only a
    // recovery after a loss is news.
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(move |event| {
            let lost = lost.clone();
            async move {
                use std::sync::atomic::Ordering;
                // Said as it happens: what is published while disconnected
                // is not delivered to this tail.
                match event {
                    async_nats::Event::Disconnected if !lost.swap(true, Ordering::Relaxed) => {
                        say!(
                            "nerve: warning: disconnected from NATS; reconnecting (events published meanwhile are missed)"
                        );
                    }
                    async_nats::Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                        say!("nerve: reconnected to NATS");
                    }
                    async_nats::Event::SlowConsumer(_) => say!(
                        "nerve: warning: this tail is too slow: the NATS client dropped messages"
                    ),
                    _ => {}
                }
            }
        })
        .connect(nerve::nats::servers(url)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", quote(url)))?;
    let mut messages = client
        .subscribe(filter.to_owned())
        .await
        .with_context(|| format!("cannot subscribe to {filter} on NATS"))?;
    // The subscription is on the server once a flush came back: events
    // published after this line are shown.
    client
        .flush()
        .await
        .context("NATS did not confirm the subscription")?;
    say!("nerve: following {filter} on {url}");
    let mut damaged = 0_u64;
    let mut prefixes_seen = std::collections::HashSet::new();
    while let Some(message) = messages.next().await {
        let subject = message.subject.as_str();
        if subject.starts_with("_INBOX.") || subject.starts_with('$') {
            // NATS's own traffic (replies, JetStream, system), matched
            // only by `*` without a prefix: not events.
            continue;
        }
        match decode(prefix, subject, &message.payload) {
            Ok((event, unnamed)) => {
                if let Some(p) = unnamed.filter(|p| !prefixes_seen.contains(*p)) {
                    say!(
                        "nerve: note: events under the subject prefix {p} are shown; \
                         `--prefix {p}` follows only those, and by event type"
                    );
                    prefixes_seen.insert(p.to_owned());
                }
                if only.is_none_or(|p| p.matches(event.event_type())) {
                    out.line(serde_json::to_string(&event)?)?;
                    out.flush()?;
                }
            }
            Err(reason) => {
                damaged += 1;
                say!(
                    "nerve: warning: skipped a message on {subject} that is not an event ({damaged} so far): {reason}"
                );
                if strict {
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    anyhow::bail!("the NATS connection was closed")
}

/// The event a message carries, checked against its subject, and the
/// subject prefix it was published under when none was given and the
/// subject is some prefix followed by the body's event type (`nerve demo
/// --nats` publishes under a fresh `nerve.demo.{nonce}.`): a tail of `*`
/// shows such events rather than refusing them.
fn decode<'s>(
    prefix: &Prefix,
    subject: &'s str,
    body: &[u8],
) -> Result<(nerve::Event, Option<&'s str>), String> {
    let name = subject::subject_event_type(prefix, subject).map_err(|e| e.to_string())?;
    let event = nerve::journal::line::decode(body).map_err(|e| e.to_string())?;
    if event.event_type() == name {
        return Ok((event, None));
    }
    if prefix.as_str().is_empty() {
        if let Some(unnamed) = subject::published_prefix(subject, event.event_type()) {
            return Ok((event, Some(unnamed)));
        }
    }
    Err(format!(
        "the subject names {name:?} but the body is a {:?} event",
        event.event_type()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_an_event_of_its_subject_or_is_refused() {
        let prefix = Prefix::new("nerve.t.").unwrap();
        let event = nerve::Event::builder("user.login").build().unwrap();
        let mut line = Vec::new();
        nerve::journal::line::encode(&event, &mut line);
        let (got, unnamed) = decode(&prefix, "nerve.t.user.login", &line).unwrap();
        assert_eq!(got.event_id(), event.event_id());
        assert_eq!(unnamed, None);
        let err = decode(&prefix, "nerve.t.user.logout", &line).unwrap_err();
        assert!(err.contains("the body is a \"user.login\" event"), "{err}");
        assert!(decode(&prefix, "other.user.login", &line).is_err());
        assert!(decode(&prefix, "nerve.t.user.login", b"{not json").is_err());
        // Without a prefix, a subject that is a prefix and the body's type
        // is shown, and the prefix said.
        let none = Prefix::new("").unwrap();
        let (got, unnamed) = decode(&none, "nerve.demo.ab12.user.login", &line).unwrap();
        assert_eq!(got.event_id(), event.event_id());
        assert_eq!(unnamed, Some("nerve.demo.ab12."));
        // Not a whole segment, or another type: refused as before.
        assert!(decode(&none, "nerve.demo.xuser.login", &line).is_err());
        assert!(decode(&none, "nerve.demo.user.logout", &line).is_err());
    }
}
