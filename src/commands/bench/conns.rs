//! `bench conns`: open N connections, hold them idle, and report how many
//! the server kept — and, given its pid, the server's memory per connection.

use std::time::Duration;

use serde_json::json;

use super::{Report, thousands};
use sockit::conn::Stream;
use sockit::endpoint::Endpoint;
use sockit::units::{duration_in, number_in};

/// What `--conns` may be: this mode is about holding many.
const CONNS_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
/// What `--server-pid` may be: Linux's PID_MAX_LIMIT.
const PID_RANGE: std::ops::RangeInclusive<u64> = 1..=4_194_304;

/// Connects in flight at once while opening.
const OPENING: usize = 256;

/// Arguments of `bench conns`.
#[derive(Debug, clap::Args)]
pub struct ConnsArgs {
    /// The server: HOST:PORT, unix:///path.
    pub endpoint: Endpoint,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000, value_parser = number_in::<usize>(CONNS_RANGE))]
    pub conns: usize,
    /// How long to hold them once open.
    #[arg(long, default_value = "5s", value_parser = duration_in(super::DURATION_RANGE))]
    pub hold: Duration,
    /// The server's process id, to read its resident memory (VmRSS).
    #[arg(long, value_name = "PID", value_parser = number_in::<u32>(PID_RANGE))]
    pub server_pid: Option<u32>,
}

pub(super) async fn run(args: ConnsArgs) -> anyhow::Result<Report> {
    let before = args.server_pid.and_then(sockit::sys::resident_bytes);
    let mut open: Vec<Stream> = Vec::with_capacity(args.conns);
    let mut failed = 0u64;
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < args.conns || !pending.is_empty() {
        while next < args.conns && pending.len() < OPENING {
            let ep = args.endpoint.clone();
            pending.spawn(async move { ep.connect(Some(Duration::from_secs(5))).await });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(s))) => open.push(s),
            _ => failed += 1,
        }
    }
    tokio::time::sleep(args.hold).await;
    let after = args.server_pid.and_then(sockit::sys::resident_bytes);
    // Still open? Drain what the server sent (a welcome line, say): EOF or
    // an error means the server dropped it; nothing more to read, alive.
    let mut dropped = 0u64;
    let mut sink = vec![0u8; 64 * 1024];
    for s in &open {
        loop {
            match s.try_read(&mut sink) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                _ => {
                    dropped += 1;
                    break;
                }
            }
        }
    }
    let held = open.len() as u64 - dropped;
    let mut r = Report::new(
        "conns",
        format!("bench conns {}  {} connections  hold {:?}", args.endpoint, args.conns, args.hold),
    );
    r.field("endpoint", json!(args.endpoint.to_string()));
    r.row("held", thousands(held), "held", json!(held));
    r.row(
        "failed",
        format!("{} (connect)  {} (dropped by the server)", thousands(failed), thousands(dropped)),
        "failed",
        json!(failed),
    );
    r.field("dropped", json!(dropped));
    if let (Some(b), Some(a)) = (before, after) {
        let per = a.saturating_sub(b) as f64 / held.max(1) as f64;
        r.row(
            "server RSS",
            format!(
                "{:.1} MiB before, {:.1} MiB held ({per:.0} B per connection)",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            ),
            "rss_bytes",
            json!(a),
        );
        r.field("rss_before_bytes", json!(b));
        r.field("bytes_per_conn", json!(per));
    }
    Ok(r)
}
