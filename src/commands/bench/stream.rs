//! `bench stream`: bulk bytes to a sink (discard, or an echo server whose
//! replies are read and dropped), or with `--recv` from a source (chargen).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Progress, Report, thousands};
use crate::commands::tls_args::TlsVerifyArgs;
use sockit::endpoint::Endpoint;
use sockit::tls::ClientTls;
use sockit::units::{number_in, size_in};

/// What `--bytes` may be.
const BYTES_RANGE: std::ops::RangeInclusive<u64> = 1..=16 << 40;
/// What `--conns` may be: parallel bulk streams.
const CONNS_RANGE: std::ops::RangeInclusive<u64> = 1..=1024;

const CHUNK: usize = 256 * 1024;
/// After the last byte is sent, how long the server may take to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `bench stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The sink (or source, with --recv): HOST:PORT, unix:///path.
    pub endpoint: Endpoint,
    /// Bytes to move in all.
    #[arg(long, default_value = "1GiB", value_parser = size_in(BYTES_RANGE))]
    pub bytes: u64,
    /// Read from a source instead of sending to a sink.
    #[arg(long)]
    pub recv: bool,
    /// Parallel streams, sharing --bytes.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = number_in::<usize>(CONNS_RANGE))]
    pub conns: usize,

    #[command(flatten)]
    pub tls: TlsVerifyArgs,
}

pub(super) async fn run(args: StreamArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.conns > 0, "conns must be at least 1");
    let moved = Arc::new(AtomicU64::new(0));
    let tls = args.tls.client(&args.endpoint)?;
    let progress = Progress::start("bytes", moved.clone(), Duration::ZERO);
    let share = args.bytes / args.conns as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.conns {
        let (ep, moved, recv, tls) = (args.endpoint.clone(), moved.clone(), args.recv, tls.clone());
        tasks.spawn(async move { one(ep, tls, share, recv, moved).await });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r? {
            errors.push(e.to_string());
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Progress::finish(progress).await;
    let total = moved.load(Ordering::Relaxed);
    let gbit = total as f64 * 8.0 / elapsed / 1e9;
    let verb = if args.recv { "received" } else { "sent" };
    let mut r = Report::new("stream", format!("bench stream {}  {verb}  conns {}", args.endpoint, args.conns));
    r.field("endpoint", json!(args.endpoint.to_string()));
    r.field("direction", json!(verb));
    r.field("duration_s", json!(elapsed));
    r.row("bytes", format!("{} in {elapsed:.2}s", thousands(total)), "bytes", json!(total));
    r.row("throughput", format!("{gbit:.2} Gbit/s"), "gbit_per_s", json!(gbit));
    r.row("errors", errors.first().cloned().unwrap_or_else(|| "0".into()), "errors", json!(errors.len()));
    Ok(r)
}

async fn one(
    ep: Endpoint,
    tls: Option<ClientTls>,
    bytes: u64,
    recv: bool,
    moved: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let stream = ep.connect_with(Some(Duration::from_secs(5)), tls.as_ref()).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; CHUNK];
    if recv {
        let mut left = bytes;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = rd.read(&mut buf[..want]).await?;
            anyhow::ensure!(n > 0, "the source closed after {} bytes", bytes - left);
            left -= n as u64;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        return Ok(());
    }
    // Send, while reading and dropping whatever comes back (an echo server
    // would otherwise stall on its full send buffer).
    let drain = async {
        let mut sink = vec![0u8; CHUNK];
        while rd.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let send = async {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            wr.write_all(&buf[..n]).await?;
            left -= n as u64;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        wr.shutdown().await
    };
    let (sent, _) = tokio::join!(send, async { tokio::time::timeout(CLOSE_TIMEOUT, drain).await });
    buf.clear();
    sent?;
    Ok(())
}
