//! `bench echo`: request/reply through an echo server. Each connection keeps
//! `--depth` messages in flight and times each one from send to full echo.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Progress, Report, histogram, thousands};
use crate::commands::tls_args::TlsVerifyArgs;
use sockit::endpoint::Endpoint;
use sockit::tls::ClientTls;
use sockit::units::{duration_in, number_in, usize_size_in};

/// What `--size` may be: the most that size × depth may be anyway.
const SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=MAX_IN_FLIGHT as u64;
/// What `--depth` may be.
const DEPTH_RANGE: std::ops::RangeInclusive<u64> = 1..=4096;
/// Bytes in flight per connection (size × depth): more, and echo server
/// and client deadlock on full socket buffers.
const MAX_IN_FLIGHT: usize = 4 << 20;

/// How long a reply may take before it counts as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a UDP datagram may take before it counts as lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// Arguments of `bench echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// The echo server: HOST:PORT, udp://HOST:PORT, unix:///path.
    pub endpoint: Endpoint,
    /// Concurrent connections (UDP: sockets).
    #[arg(short = 'c', long, default_value_t = 50, value_parser = number_in::<usize>(super::CONNS_RANGE))]
    pub conns: usize,
    /// Message size.
    #[arg(short = 's', long, default_value = "64", value_parser = usize_size_in(SIZE_RANGE))]
    pub size: usize,
    /// How long to run.
    #[arg(short = 'd', long, default_value = "10s", value_parser = duration_in(super::DURATION_RANGE))]
    pub duration: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = number_in::<usize>(DEPTH_RANGE))]
    pub depth: usize,

    #[command(flatten)]
    pub tls: TlsVerifyArgs,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    messages: u64,
    errors: u64,
    failed: u64,
}

pub(super) async fn run(args: EchoArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.size > 0 && args.conns > 0 && args.depth > 0, "size, conns and depth must be at least 1");
    anyhow::ensure!(
        args.size * args.depth <= MAX_IN_FLIGHT,
        "size × depth must stay within 4 MiB, or echo and client deadlock on full buffers"
    );
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let tls = args.tls.client(&args.endpoint)?;
    let progress = Progress::start("msgs", count.clone(), args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.conns {
        let (ep, count, tls) = (args.endpoint.clone(), count.clone(), tls.clone());
        let (size, depth) = (args.size, args.depth);
        tasks.spawn(async move {
            if ep.is_datagram() {
                udp_worker(ep, size, depth, deadline, count).await
            } else {
                stream_worker(ep, tls, size, depth, deadline, count).await
            }
        });
    }
    let mut total = Tally { hist: Some(histogram()), ..Tally::default() };
    while let Some(r) = tasks.join_next().await {
        let t = r?;
        total.messages += t.messages;
        total.errors += t.errors;
        total.failed += t.failed;
        if let (Some(all), Some(h)) = (total.hist.as_mut(), t.hist.as_ref()) {
            all.add(h)?;
        }
    }
    let elapsed = started.elapsed().min(args.duration).as_secs_f64().max(1e-9);
    Progress::finish(progress).await;

    let rate = total.messages as f64 / elapsed;
    let mb = rate * args.size as f64 * 2.0 / 1e6;
    let mut r = Report::new(
        "echo",
        format!(
            "bench echo {}  conns {}  size {} B  depth {}  {:.1}s",
            args.endpoint, args.conns, args.size, args.depth, elapsed
        ),
    );
    r.field("endpoint", json!(args.endpoint.to_string()));
    r.field("conns", json!(args.conns));
    r.field("size", json!(args.size));
    r.field("depth", json!(args.depth));
    r.field("duration_s", json!(elapsed));
    r.row(
        "messages",
        format!("{}  ({}/s)", thousands(total.messages), thousands(rate as u64)),
        "messages",
        json!(total.messages),
    );
    r.field("msgs_per_s", json!(rate));
    r.row("throughput", format!("{mb:.1} MB/s (both ways)"), "mb_per_s", json!(mb));
    r.latency(total.hist.as_ref().unwrap());
    r.row("errors", thousands(total.errors), "errors", json!(total.errors));
    r.row("failed", format!("{} connections", thousands(total.failed)), "failed_conns", json!(total.failed));
    Ok(r)
}

fn message(size: usize) -> Vec<u8> {
    // Printable, newline-terminated: line-based echo servers work too.
    let mut m: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    m[size - 1] = b'\n';
    m
}

async fn stream_worker(
    ep: Endpoint,
    tls: Option<ClientTls>,
    size: usize,
    depth: usize,
    deadline: Instant,
    count: Arc<AtomicU64>,
) -> Tally {
    let mut t = Tally::default();
    let mut s = match ep.connect_with(Some(REPLY_TIMEOUT), tls.as_ref()).await {
        Ok(s) => s,
        Err(_) => {
            t.failed = 1;
            return t;
        }
    };
    let mut hist = histogram();
    let msg = message(size);
    let mut back = vec![0u8; size];
    let mut in_flight = VecDeque::with_capacity(depth);
    let result: io::Result<()> = async {
        for _ in 0..depth {
            in_flight.push_back(Instant::now());
            s.write_all(&msg).await?;
        }
        while let Some(sent) = in_flight.pop_front() {
            tokio::time::timeout(REPLY_TIMEOUT, s.read_exact(&mut back)).await??;
            let now = Instant::now();
            if back != msg {
                t.errors += 1;
            }
            let _ = hist.record((now - sent).as_nanos() as u64);
            t.messages += 1;
            count.fetch_add(1, Ordering::Relaxed);
            if now < deadline {
                in_flight.push_back(now);
                s.write_all(&msg).await?;
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        t.errors += 1;
    }
    t.hist = Some(hist);
    t
}

async fn udp_worker(ep: Endpoint, size: usize, depth: usize, deadline: Instant, count: Arc<AtomicU64>) -> Tally {
    let mut t = Tally::default();
    let Ok(sock) = ep.connect_datagram().await else {
        t.failed = 1;
        return t;
    };
    let size = size.max(8);
    let mut hist = histogram();
    let mut msg = message(size);
    let mut back = vec![0u8; 65536];
    let mut seq = 0u64;
    // Sequence number → send time, for the datagrams in flight.
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    while Instant::now() < deadline {
        while in_flight.len() < depth {
            seq += 1;
            msg[..8].copy_from_slice(&seq.to_be_bytes());
            in_flight.push_back((seq, Instant::now()));
            if sock.send(&msg).await.is_err() {
                t.errors += 1;
                in_flight.pop_back();
                break;
            }
        }
        match tokio::time::timeout(UDP_LOSS_TIMEOUT, sock.recv(&mut back)).await {
            Ok(Ok(n)) if n >= 8 => {
                let got = u64::from_be_bytes(back[..8].try_into().unwrap());
                if let Some(i) = in_flight.iter().position(|(s, _)| *s == got) {
                    let (_, sent) = in_flight.remove(i).unwrap();
                    let _ = hist.record(sent.elapsed().as_nanos() as u64);
                    t.messages += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => t.errors += 1,
            Err(_) => {
                // Lost: count them and start over.
                t.errors += in_flight.len() as u64;
                in_flight.clear();
            }
        }
    }
    t.hist = Some(hist);
    t
}
