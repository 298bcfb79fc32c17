//! Log setup and the one status line every server prints when it is ready.
//!
//! Logs go to stderr (stdout carries data only), at the level `RUST_LOG`
//! gives if set, else at the one the program chooses. With
//! [`LogFormat::Json`] every event is one JSON object per line.

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::endpoint::Endpoint;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event, for scripts and log shippers.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber, with `level` (an `EnvFilter`
/// directive such as `"info"` or `"warn,my_crate=debug"`) unless
/// `RUST_LOG` is set.
pub fn init(level: &str, format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

thread_local! {
    /// Lines held back by a [`Batch`] on this thread.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Lines held back are written once they reach this size, at the latest.
const HELD_MAX: usize = 64 * 1024;

/// While one is alive, this thread's log lines are gathered and written
/// together when it drops (or every 64 KiB): a loop that logs
/// a line per item pays one write for many.
#[must_use]
pub struct Batch(());

/// Starts holding this thread's log lines until the returned guard drops.
pub fn batch() -> Batch {
    HELD.with(|h| {
        h.borrow_mut().get_or_insert_with(Vec::new);
    });
    Batch(())
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(held) = HELD.with(|h| h.borrow_mut().take()) {
            let _ = io::stderr().write_all(&held);
        }
    }
}

/// The log writer: stderr, through this thread's [`Batch`] if one is alive.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = HELD.with(|h| {
            let mut h = h.borrow_mut();
            let held = h.as_mut()?;
            held.extend_from_slice(buf);
            Some((held.len() >= HELD_MAX).then(|| std::mem::take(held)))
        });
        match full {
            None => io::stderr().write(buf),
            Some(Some(out)) => io::stderr().write_all(&out).map(|()| buf.len()),
            Some(None) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Prints the TLS certificate's fingerprint at start, for clients to pin
/// (`--tls-fingerprint`): `TLS certificate SHA-256 fingerprint: AB:…`.
pub fn certificate(fingerprint: &str, ephemeral: bool) {
    let kind = if ephemeral { " (ephemeral, self-signed)" } else { "" };
    status(
        &format!("TLS certificate SHA-256 fingerprint: {fingerprint}{kind}"),
        serde_json::json!({ "fingerprint": fingerprint }),
    );
}

/// Announces a ready listener: `listening on tcp://127.0.0.1:40123 (echo)` on
/// stderr — the line scripts and tests wait for to learn the real port. In
/// JSON mode it is an event with that message and `endpoint` / `service`
/// fields instead. The server core prints it for every listener it serves
/// ([`Server::serve_stream`](crate::Server::serve_stream) and the datagram
/// methods); only `sockit listen`, which runs no server, calls it itself.
pub fn listening(endpoint: &Endpoint, service: &str) {
    let line = format!("listening on {endpoint} ({service})");
    status(&line, serde_json::json!({ "endpoint": endpoint.to_string(), "service": service }));
}

/// A status line scripts rely on: written directly, not through the level
/// filter; in JSON mode an event with the line as its message plus `fields`.
fn status(line: &str, fields: serde_json::Value) {
    if FORMAT.get() == Some(&LogFormat::Json) {
        let mut all = serde_json::json!({ "message": line });
        if let (Some(all), serde_json::Value::Object(more)) = (all.as_object_mut(), fields) {
            all.extend(more);
        }
        let event = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "level": "INFO",
            "fields": all,
        });
        eprintln!("{event}");
    } else {
        eprintln!("{line}");
    }
}
