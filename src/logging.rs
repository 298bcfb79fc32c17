//! Log setup and the one status line every server prints when it is ready.
//!
//! Logs go to stderr (stdout carries data only). The level comes from
//! `RUST_LOG` if set, else from `-v`/`-q`: warnings by default, connection
//! events (accepted, closed with bytes and duration) with `-v`. With
//! `--log-format json` every event is one JSON object per line and the
//! default level is info, so scripts see every event.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::endpoint::Endpoint;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event, for scripts and log shippers.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber. `verbosity` is the count of `-v` minus
/// the count of `-q`.
pub fn init(verbosity: i8, format: LogFormat) {
    let _ = FORMAT.set(format);
    let base = if format == LogFormat::Json { 1 } else { 0 };
    let level = match verbosity + base {
        i8::MIN..=-1 => "error",
        // The files service logs each file it stores even when quiet-ish.
        0 => "warn,sockit::services::files=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
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
/// fields instead.
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
