//! `bench chat`: fan-out through a line broker. Every client connects and
//! reads; `--senders` of them also send. Each line carries its sender and
//! send time, so every delivery is timed end to end. Works with any broker
//! that relays lines to the other clients — `ncat --broker`, sockit chat
//! (which prefixes `<nick> `; the marker is found anywhere in the line).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use super::{Progress, Report, histogram, thousands};
use sockit::endpoint::Endpoint;
use sockit::units::{duration_in, number_in, usize_size_in};

/// What `--clients` may be: a sender and at least one listener.
const CLIENTS_RANGE: std::ops::RangeInclusive<u64> = 2..=*super::CONNS_RANGE.end();
/// What `--size` may be.
const SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=1 << 20;
/// What `--rate` may be, in lines per second per sender.
const RATE_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000_000;

const MARK: &str = "bench:";
const SYNC: &str = "bench-sync";
/// How long stragglers may still arrive after the senders stop.
const DRAIN: Duration = Duration::from_secs(1);
/// Each client's read buffer.
const READ_BUF: usize = 64 * 1024;
/// Latencies a client gathers before adding them to its shard.
const TIMES: usize = 512;
/// Histograms the clients share.
const SHARDS: usize = 16;

/// Adds `times` to a shared histogram.
fn record(shard: &Mutex<Histogram<u64>>, times: &mut Vec<u64>) {
    let mut h = shard.lock().unwrap();
    for t in times.drain(..) {
        let _ = h.record(t);
    }
}

/// Arguments of `bench chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The broker: HOST:PORT, unix:///path; several instances of one chat
    /// (scaled out) take the clients in turn.
    #[arg(required = true, num_args = 1..)]
    pub endpoints: Vec<Endpoint>,
    /// Clients in all.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = number_in::<usize>(CLIENTS_RANGE))]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 1, value_parser = number_in::<usize>(super::CONNS_RANGE))]
    pub senders: usize,
    /// Line size in bytes.
    #[arg(short = 's', long, default_value = "64", value_parser = usize_size_in(SIZE_RANGE))]
    pub size: usize,
    /// How long the senders send.
    #[arg(short = 'd', long, default_value = "10s", value_parser = duration_in(super::DURATION_RANGE))]
    pub duration: Duration,
    /// Lines per second per sender (default: as fast as the broker takes them).
    #[arg(long, value_parser = number_in::<u64>(RATE_RANGE))]
    pub rate: Option<u64>,
}

pub(super) async fn run(args: ChatArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.clients >= 2 && args.senders >= 1 && args.senders <= args.clients,
        "need 2+ clients and 1..=clients senders"
    );
    let epoch = Instant::now();
    let synced = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop_reading = tokio_util::sync::CancellationToken::new();
    let mut read_tasks = tokio::task::JoinSet::new();
    let shards: Vec<_> = (0..SHARDS).map(|_| Arc::new(Mutex::new(histogram()))).collect();
    let mut writers = Vec::new();
    let mut failed = 0u64;
    // Each client reads from the moment it connects: a broker announces
    // every join to everyone, and a client not yet read would fall behind.
    // Over WebSocket, a line per message: a message is never cut mid-line.
    let ws = sockit::ws::WsConfig { lines: true, ..Default::default() };
    for i in 0..args.clients {
        let ep = &args.endpoints[i % args.endpoints.len()];
        let s = match ep.connect_ws(Some(Duration::from_secs(5)), None, ws.clone()).await {
            Ok(s) => s,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        let (r, w) = tokio::io::split(s);
        let first = writers.is_empty();
        writers.push(w);
        let (synced, delivered, stop) = (synced.clone(), delivered.clone(), stop_reading.clone());
        let shard = shards[i % shards.len()].clone();
        read_tasks.spawn(async move {
            let mut r = r;
            let mut buf = vec![0u8; READ_BUF];
            let mut have = 0;
            let mut seen_sync = false;
            // Latencies go to a shared shard now and then: a histogram per
            // client would be thousands of 300 KB tables to touch.
            let mut times = Vec::with_capacity(TIMES);
            loop {
                let n = tokio::select! {
                    n = r.read(&mut buf[have..]) => match n { Ok(n) if n > 0 => n, _ => break },
                    _ = stop.cancelled() => break,
                };
                have += n;
                let now = epoch.elapsed().as_nanos() as u64;
                // Whole lines, scanned as bytes: no allocation per line.
                let mut start = 0;
                let mut got = 0;
                while let Some(nl) = memchr::memchr(b'\n', &buf[start..have]) {
                    let line = &buf[start..start + nl];
                    start += nl + 1;
                    if let Some(ns) = sent_at(line) {
                        times.push(now.saturating_sub(ns).max(1));
                        got += 1;
                    } else if !seen_sync && !first && memchr::memmem::find(line, SYNC.as_bytes()).is_some() {
                        seen_sync = true;
                        synced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if got > 0 {
                    delivered.fetch_add(got, Ordering::Relaxed);
                }
                if times.len() >= TIMES {
                    record(&shard, &mut times);
                }
                buf.copy_within(start..have, 0);
                have -= start;
                if have == buf.len() {
                    have = 0; // a line longer than the buffer: not ours
                }
            }
            record(&shard, &mut times);
        });
    }
    anyhow::ensure!(writers.len() >= 2, "only {} of {} clients could connect", writers.len(), args.clients);
    let clients = writers.len();
    // Wait until every other client is known to the broker: client 0 sends
    // sync lines until all of them have seen one.
    let sync_deadline = Instant::now() + Duration::from_secs(10);
    while synced.load(Ordering::Relaxed) < clients - 1 && Instant::now() < sync_deadline {
        if writers[0].write_all(format!("{SYNC}\n").as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if synced.load(Ordering::Relaxed) < clients - 1 {
        warn!("only {} of {} clients saw the sync line; measuring anyway", synced.load(Ordering::Relaxed), clients - 1);
    }

    let progress = Progress::start("deliveries", delivered.clone(), args.duration);
    let started = Instant::now();
    let deadline = started + args.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let mut send_tasks = tokio::task::JoinSet::new();
    for (id, mut w) in writers.drain(..args.senders.min(clients)).enumerate() {
        let (sent, size, rate) = (sent.clone(), args.size, args.rate);
        send_tasks.spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                // Paced against a schedule, not a sleep per line: timers
                // have a millisecond's grain, rates go far beyond 1000/s.
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(seq as f64 / r.max(1) as f64);
                    if due > Instant::now() + Duration::from_millis(1) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let ns = epoch.elapsed().as_nanos() as u64;
                let mut line = format!("{MARK}{id}:{ns}:{seq}:");
                while line.len() + 1 < size {
                    line.push('x');
                }
                line.push('\n');
                if tokio::time::timeout_at(deadline.into(), w.write_all(line.as_bytes()))
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    break;
                }
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            w
        });
    }
    let mut keep = Vec::new();
    while let Some(w) = send_tasks.join_next().await {
        keep.push(w?);
    }
    let send_secs = started.elapsed().as_secs_f64();
    // Let what is in flight arrive, then stop.
    let expected = sent.load(Ordering::Relaxed) * (clients as u64 - 1);
    let drain_until = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_reading.cancel();
    while let Some(r) = read_tasks.join_next().await {
        r?;
    }
    let mut hist = histogram();
    for shard in &shards {
        hist.add(&*shard.lock().unwrap())?;
    }
    Progress::finish(progress).await;
    drop(keep);
    drop(writers);

    let got = delivered.load(Ordering::Relaxed);
    let rate = got as f64 / send_secs.max(1e-9);
    let mut r = Report::new(
        "chat",
        format!(
            "bench chat {}  clients {}  senders {}  size {} B  {:.1}s",
            names(&args.endpoints),
            clients,
            args.senders,
            args.size,
            send_secs
        ),
    );
    r.field("endpoint", json!(names(&args.endpoints)));
    r.field("clients", json!(clients));
    r.field("senders", json!(args.senders));
    r.field("size", json!(args.size));
    r.field("duration_s", json!(send_secs));
    r.row("sent", thousands(sent.load(Ordering::Relaxed)), "sent", json!(sent.load(Ordering::Relaxed)));
    r.row(
        "deliveries",
        format!("{}  ({}/s) of {} expected", thousands(got), thousands(rate as u64), thousands(expected)),
        "deliveries",
        json!(got),
    );
    r.field("deliveries_per_s", json!(rate));
    r.latency(&hist);
    r.row("failed", format!("{} connections", thousands(failed)), "failed_conns", json!(failed));
    Ok(r)
}

fn names(eps: &[Endpoint]) -> String {
    eps.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" ")
}

/// The send time in a bench line (`…bench:<sender>:<ns>:<seq>:…`).
fn sent_at(line: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(line, MARK.as_bytes())? + MARK.len();
    let mut fields = line[at..].split(|&b| b == b':');
    fields.next()?;
    std::str::from_utf8(fields.next()?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_send_time_anywhere_in_a_line() {
        assert_eq!(sent_at(b"bench:3:12345:7:xxxx"), Some(12345));
        assert_eq!(sent_at(b"<guest-4> bench:0:99:1:"), Some(99));
        assert_eq!(sent_at(b"* guest-4 joined"), None);
        assert_eq!(sent_at(b"bench:1"), None);
    }
}
