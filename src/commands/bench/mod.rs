//! `sockit bench`: a load generator for sockit and for any other server.
//! Every run is bounded by its duration (or byte count), shows a live
//! progress line when stderr is a terminal, and ends with a table, or one
//! JSON object with `--json`.

mod chat;
mod conns;
mod echo;
mod stream;

use std::io::IsTerminal;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sockit::error::ExitCode;

pub use chat::ChatArgs;
pub use conns::ConnsArgs;
pub use echo::EchoArgs;
pub use stream::StreamArgs;

/// How long a timed run (`-d`, `--hold`) may last: a day, so that every
/// load loop ends.
pub const DURATION_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(24 * 3600);
/// Connections or clients a run may open at once: past this, the client's
/// own descriptors and ports run out first.
pub const CONNS_RANGE: RangeInclusive<u64> = 1..=100_000;

/// Arguments of `sockit bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sockit bench echo 127.0.0.1:7007 -c 50 -s 64 -d 10s
  sockit bench echo udp://127.0.0.1:7007 -c 4 --depth 8
  sockit bench stream 127.0.0.1:7009 --bytes 2GiB        (discard service: a sink)
  sockit bench stream 127.0.0.1:7019 --bytes 2GiB --recv (chargen: a source)
  sockit bench chat 127.0.0.1:7070 -c 500 --senders 10
  sockit bench conns 127.0.0.1:7007 -c 10000 --hold 5s --server-pid 1234

Client and server share the machine's cores: compare servers by ratios
measured in the same run, not by absolute figures.")]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub mode: Mode,

    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The benchmark modes.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Request/reply through an echo server (TCP or UDP): msgs/s, MB/s, latency.
    Echo(EchoArgs),
    /// Bulk bytes to a sink, or from a source with --recv: Gbit/s.
    Stream(StreamArgs),
    /// Fan-out through a line broker: deliveries/s and end-to-end latency.
    Chat(ChatArgs),
    /// Open and hold idle connections: how many, and the server's memory.
    Conns(ConnsArgs),
}

/// Runs `sockit bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    sockit::sys::raise_open_file_limit();
    let report = match args.mode {
        Mode::Echo(a) => echo::run(a).await?,
        Mode::Stream(a) => stream::run(a).await?,
        Mode::Chat(a) => chat::run(a).await?,
        Mode::Conns(a) => conns::run(a).await?,
    };
    let text = if args.json { format!("{}\n", report.json()) } else { report.table() };
    super::print_stdout(text.as_bytes())
}

/// A benchmark's result: a title, then labelled rows; each row also has a
/// JSON key and value.
#[derive(Debug)]
pub struct Report {
    title: String,
    rows: Vec<(&'static str, String, &'static str, Value)>,
    fields: serde_json::Map<String, Value>,
}

impl Report {
    fn new(mode: &str, title: String) -> Self {
        let mut fields = serde_json::Map::new();
        fields.insert("mode".into(), json!(mode));
        Report { title, rows: vec![], fields }
    }

    /// A JSON field that is not a row of the table.
    fn field(&mut self, key: &str, value: Value) {
        self.fields.insert(key.into(), value);
    }

    /// A row: `label  text` in the table, `key: value` in JSON.
    fn row(&mut self, label: &'static str, text: String, key: &'static str, value: Value) {
        self.rows.push((label, text, key, value));
    }

    fn latency(&mut self, hist: &Histogram<u64>) {
        if hist.is_empty() {
            return;
        }
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let text = format!(
            "p50 {}  p99 {}  p99.9 {}  max {}",
            fmt_us(us(0.5)),
            fmt_us(us(0.99)),
            fmt_us(us(0.999)),
            fmt_us(hist.max() as f64 / 1000.0)
        );
        let value = json!({"p50": us(0.5), "p99": us(0.99), "p999": us(0.999), "max": hist.max() as f64 / 1000.0});
        self.row("latency", text, "latency_us", value);
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = format!("{}\n", self.title);
        for (label, text, _, _) in &self.rows {
            s.push_str(&format!("  {label:<12} {text}\n"));
        }
        s
    }

    /// The JSON object.
    pub fn json(&self) -> Value {
        let mut m = self.fields.clone();
        for (_, _, key, value) in &self.rows {
            m.insert((*key).into(), value.clone());
        }
        Value::Object(m)
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A live progress line on stderr (only when it is a terminal): elapsed time,
/// a count and its rate.
struct Progress {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(label: &'static str, count: Arc<AtomicU64>, total: Duration) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let secs = started.elapsed().as_secs_f64();
                let n = count.load(Ordering::Relaxed);
                eprint!(
                    "\r  {secs:5.1}s / {:.0}s  {} {label} ({}/s)   ",
                    total.as_secs_f64(),
                    thousands(n),
                    thousands((n as f64 / secs.max(0.001)) as u64)
                );
            }
            eprint!("\r{:70}\r", "");
        });
        Some(Progress { stop, task })
    }

    async fn finish(progress: Option<Progress>) {
        if let Some(p) = progress {
            let _ = p.stop.send(());
            let _ = p.task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(fmt_us(1500.0), "1.50 ms");
        assert_eq!(fmt_us(42.0), "42 µs");
    }

    #[test]
    fn report_as_table_and_json() {
        let mut r = Report::new("echo", "bench echo".into());
        r.row("messages", "10".into(), "messages", json!(10));
        let mut h = histogram();
        h.record(2_000).unwrap();
        r.latency(&h);
        assert!(r.table().contains("  messages     10\n"));
        let j = r.json();
        assert_eq!(j["mode"], "echo");
        assert_eq!(j["messages"], 10);
        assert_eq!(j["latency_us"]["p50"], 2.0);
    }
}
